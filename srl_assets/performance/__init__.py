"""Evaluation of checkpoints: per-candidate and per-skill pass rates with confidence intervals
(``performance_tracker``) and detection of weak or regressed skills (``weakness_detector``)."""
