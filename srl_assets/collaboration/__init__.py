"""Three-model collaboration: LoreRetriever -> TeacherPlanner -> Verifier, run by the orchestrator."""
