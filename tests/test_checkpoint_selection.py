"""RLVR's best-checkpoint selection: validated every eval_steps, the best trained step is restored
(never the start), ties go to the higher mean score, and a resumed run keeps its best-so-far."""

from types import SimpleNamespace

import pytest
import torch

from srl_assets.collaboration.verifier import Verdict
from srl_assets.performance import evaluation
from srl_assets.rlvr.checkpoint_selection import BestCheckpointSelector


class ScriptedVerifier:
    """Reads 'pass' / 'fail:<score>' from the decoded text."""

    def verify_trajectory(self, task, text):
        if text == "pass":
            return Verdict(passed=True, score=1.0, failures=[])
        return Verdict(passed=False, score=float(text.split(":")[1]), failures=[])


@pytest.fixture
def scripted(monkeypatch):
    """Each validation pass decodes the next list of outputs."""
    script: list[list[str]] = []
    monkeypatch.setattr(evaluation, "generate", lambda model, tok, prompts, **kw: script.pop(0))
    return script


TASKS = [SimpleNamespace(task_id=f"t{i}", skills=()) for i in (1, 2)]


def whitespace_tokenizer(text, add_special_tokens=False):
    return {"input_ids": text.split()}


def make(tmp_path, eval_steps=2):
    return BestCheckpointSelector(["p1", "p2"], TASKS, ScriptedVerifier(), tokenizer=whitespace_tokenizer,
                                  eval_steps=eval_steps, best_dir=tmp_path / "best")


def step(selector, model, n, max_steps=6):
    model.weight.data.fill_(float(n))  # the weights say which step they are
    selector.on_step_end(None, SimpleNamespace(global_step=n, max_steps=max_steps), None, model=model)


def test_best_trained_step_is_restored_never_the_start(tmp_path, scripted):
    model = torch.nn.Linear(2, 1, bias=False)
    selector = make(tmp_path)
    scripted += [["pass", "pass"],              # step 0: the start, best of all but not a candidate
                 ["pass", "fail:0.5"],          # step 2
                 ["pass", "fail:0.8"],          # step 4: same pass rate, higher score -> best
                 ["fail:0.9", "fail:0.9"]]      # step 6 (last)
    selector.on_train_begin(None, SimpleNamespace(global_step=0), None, model=model)
    for n in range(1, 7):
        step(selector, model, n)
    assert [p.step for p in selector.history] == [0, 2, 4, 6]
    assert selector.best.step == 4 and selector.best.pass_rate == 0.5
    chosen = selector.restore_best(model)
    assert chosen.step == 4 and torch.all(model.weight == 4.0)
    assert selector.summary()["selected_step"] == 4


def test_last_step_is_validated_even_off_the_interval(tmp_path, scripted):
    model = torch.nn.Linear(2, 1, bias=False)
    selector = make(tmp_path, eval_steps=4)
    scripted += [["fail:0.1", "fail:0.1"], ["fail:0.2", "fail:0.2"]]
    for n in range(1, 6):
        step(selector, model, n, max_steps=5)
    assert [p.step for p in selector.history] == [4, 5] and selector.best.step == 5


def test_resumed_run_keeps_its_best_so_far(tmp_path, scripted):
    model = torch.nn.Linear(2, 1, bias=False)
    first = make(tmp_path)
    scripted += [["pass", "pass"], ["fail:0.3", "fail:0.3"]]
    step(first, model, 2)
    step(first, model, 4)
    # killed here; the retry builds a new selector on the same folder and resumes at step 4
    resumed = make(tmp_path)
    assert resumed.best.step == 2 and [p.step for p in resumed.history] == [2, 4]
    resumed.on_train_begin(None, SimpleNamespace(global_step=4), None, model=model)  # no re-validation of the start
    scripted += [["fail:0.5", "pass"]]
    step(resumed, model, 6)
    resumed.restore_best(model)
    assert torch.all(model.weight == 2.0)


def test_validation_needs_one_prompt_per_task(tmp_path):
    with pytest.raises(ValueError, match="one prompt per task"):
        BestCheckpointSelector(["p"], [], ScriptedVerifier(), None, 1, tmp_path)
    with pytest.raises(ValueError, match="eval_steps"):
        BestCheckpointSelector(["p"], [None], ScriptedVerifier(), None, 0, tmp_path)


def test_rlvr_tasks_are_train_split_disjoint_and_reproducible():
    from srl_assets.domains import get_domain
    from srl_assets.dynamic_example_generator import DynamicExampleGenerator
    from srl_assets.rlvr.rlvr_tasks import rlvr_tasks
    from srl_assets.rules_integration import RulesIntegration

    generator = DynamicExampleGenerator(get_domain("tree"), RulesIntegration().load("tree"))
    stored = generator.generate(20, "train", 1)
    train, validation = rlvr_tasks(stored, generator, 50, 10, seed=0)
    assert len(train) == 50 and len(validation) == 10
    ids = [t.task_id for t in train + validation]
    assert len(set(ids)) == 60, "training and validation tasks overlap"
    assert {t.task_id for t in stored} <= {t.task_id for t in train}, "stored tasks come first"
    assert all(t.split == "train" for t in train + validation)
    again = rlvr_tasks(stored, generator, 50, 10, seed=0)
    assert [t.task_id for t in again[1]] == [t.task_id for t in validation]
    with pytest.raises(ValueError, match="eval tasks"):
        rlvr_tasks(generator.generate(2, "eval", 1), generator, 5, 1, seed=0)


def test_grpo_config_names_bad_new_fields():
    from srl_assets.training.configs import GRPOStageConfig

    for field, value in [("eval_steps", -1), ("warmup_ratio", 1.0), ("top_p", 0.0), ("num_iterations", 0)]:
        with pytest.raises(ValueError, match=field):
            GRPOStageConfig(**{field: value})


def test_only_the_main_process_validates_and_keeps_weights(tmp_path, scripted, monkeypatch):
    """Under a multi-process launch the other processes neither decode the validation tasks nor write
    into the shared best folder; the main one does both."""
    model = torch.nn.Linear(2, 1, bias=False)
    monkeypatch.setenv("RANK", "1")
    other = make(tmp_path)
    other.on_train_begin(None, SimpleNamespace(global_step=0), None, model=model)
    for n in range(1, 7):
        step(other, model, n)
    assert other.history == [] and other.restore_best(model) is None and not (tmp_path / "best").exists()
    monkeypatch.setenv("RANK", "0")
    main = make(tmp_path)
    scripted += [["pass", "fail:0.5"]]
    for n in (1, 2):
        step(main, model, n, max_steps=2)
    assert main.best.step == 2 and scripted == [] and (tmp_path / "best" / "best.pt").is_file()
