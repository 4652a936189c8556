"""RFT (rejection-sampling fine-tuning), the RLVR algorithm that learns from the policy's own verified
samples: which samples it keeps, that it fine-tunes on exactly those, that it runs end to end (the
``rlvr`` stage, several rounds, best round on validation) and that a killed child resumes without
sampling again."""

import json
from pathlib import Path

import pytest

from srl_assets.collaboration.teacher_planner import make_teacher
from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.prompts import task_prompt
from srl_assets.rlvr import rft_trainer
from srl_assets.rlvr.rft_trainer import RFTTrainer, VerifiedSample, order_rows, select_samples
from srl_assets.rlvr.verifier_reward import task_column
from srl_assets.rules_integration import RulesIntegration
from srl_assets.training.configs import RFTConfig
from srl_assets.training.stages import run_stage
# The tiny base model, the plant data and the kill-and-resume helper of the training tests.
from test_training import (_kill_after_first_checkpoint, _reloads_and_generates, _resumed_step,  # noqa: F401
                           _rlvr_rows, _spec, base_path, plant_data)

RFT_TINY = {"algorithm": "rft", "prompts_per_round": 2, "samples_per_prompt": 2, "max_new_tokens": 24,
            "min_score": 0.0, "sft_steps": 2, "batch_size": 2, "save_steps": 1, "learning_rate": 1e-3}


def _s(task, completion, score):
    return VerifiedSample(task, f"p{task}", completion, score, score == 1.0)


@pytest.mark.parametrize("samples,min_score,kept", [
    # case: the best sample of each task is kept, in task order
    ([_s(1, "a", 0.5), _s(1, "b", 1.0), _s(0, "c", 1.0)], 1.0, ["c", "b"]),
    # case: a task none of whose samples passes gives nothing
    ([_s(0, "a", 0.8), _s(0, "b", 0.6), _s(1, "c", 1.0)], 1.0, ["c"]),
    # case: below 1.0 the best partial sample counts; a tie keeps the first drawn
    ([_s(0, "a", 0.6), _s(0, "b", 0.8), _s(0, "c", 0.8), _s(1, "d", 0.2)], 0.5, ["b"]),
    # case: min_score 0 keeps one sample of every task
    ([_s(0, "a", 0.0), _s(0, "b", 0.0), _s(1, "c", 0.0)], 0.0, ["a", "c"]),
])
def test_select_samples_keeps_the_best_verified_sample_per_task(samples, min_score, kept):
    assert [s.completion for s in select_samples(samples, min_score)] == kept


def test_fresh_tasks_come_first_in_a_seeded_order():
    rows = [{"prompt": f"p{i}", "fresh": i % 3 != 0} for i in range(12)]
    ordered = order_rows(rows, seed=3)
    assert [r["fresh"] for r in ordered] == [True] * 8 + [False] * 4
    assert ordered == order_rows(rows, seed=3) and ordered != order_rows(rows, seed=4)
    assert sorted(r["prompt"] for r in ordered) == sorted(r["prompt"] for r in rows)


@pytest.mark.parametrize("kept,steps", [
    (270, 150),  # case: many kept samples: sft_steps (150 steps of 8 = 4.4 passes)
    (22, 28),    # case: few: ten passes, ceil(10 * 22 / 8)
    (1, 2),      # case: one sample still gets its ten passes, in two steps of 8
])
def test_a_round_fine_tunes_at_most_max_epochs_passes(kept, steps):
    assert RFTConfig(sft_steps=150, max_epochs=10.0, batch_size=8).round_steps(kept) == steps


@pytest.mark.parametrize("field,value", [("rounds", 0), ("prompts_per_round", 0), ("sft_steps", 0),
                                         ("min_score", 1.5), ("samples_per_prompt", 0), ("top_p", 0.0),
                                         ("max_epochs", 0.0)])
def test_a_bad_config_value_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        RFTConfig(**{field: value})


def test_fine_tunes_on_exactly_the_samples_that_pass_the_verifier(tmp_path, monkeypatch, base_path):
    """The policy 'samples' the teacher's trajectory for one task and a mutated one (its final spec
    breaks a rule) for the other: only the teacher's is fine-tuned on."""
    rules = RulesIntegration().load("plant")
    domain = get_domain("plant")
    tasks = DynamicExampleGenerator(domain, rules).generate(2, "train", 5)
    teacher = make_teacher("procedural", domain, rules)
    good = teacher.plan(tasks[0], [])
    lines = teacher.plan(tasks[1], []).splitlines()
    bad = "\n".join(lines[:-1] + [lines[-1].replace('"edibility": "', '"edibility": "not-')])
    rows = [{"prompt": task_prompt(t.prompt, ""), "task": task_column(t)} for t in tasks]
    canned = {rows[0]["prompt"]: good, rows[1]["prompt"]: bad}
    monkeypatch.setattr(rft_trainer, "generate", lambda model, tok, prompts, **kw: [canned[p] for p in prompts])
    seen = {}

    def fake_sft(model, tokenizer, examples, out_dir, **kwargs):
        seen["examples"] = examples
        return {"final_loss": 0.5}

    monkeypatch.setattr("srl_assets.models.sft.warm_start_sft", fake_sft)
    verifier = Verifier(domain, rules)
    bad_score = verifier.verify_trajectory(tasks[1], bad).score
    assert verifier.verify_trajectory(tasks[0], good).passed and bad_score < 1.0
    cfg = RFTConfig(prompts_per_round=2, samples_per_prompt=2, sft_steps=3)
    summary = RFTTrainer(cfg, verifier).train(base_path, rows, tmp_path / "work", tmp_path / "out", [])
    assert seen["examples"] == [{"prompt": rows[0]["prompt"], "completion": good}]
    assert summary["rounds"] == [{"round": 0, "samples": 4, "tasks": 2, "kept": 1, "sample_pass_rate": 0.5,
                                  "format_violation_rate": 0.0,  # a wrong value is not a format failure
                                  "sample_score_mean": pytest.approx((2.0 + 2 * bad_score) / 4), "final_loss": 0.5,
                                  "steps": 2,  # ten passes over one sample in batches of 8: 2 of the 3 steps
                                  "generated_tokens": summary["rounds"][0]["generated_tokens"]}]
    assert summary["rounds"][0]["generated_tokens"] >= 4  # every sample wrote at least one token
    assert summary["raw_reward_history"] == [summary["rounds"][0]["sample_score_mean"]]


def test_no_verified_sample_is_a_clear_error(tmp_path, monkeypatch, base_path, plant_data):
    monkeypatch.setattr(rft_trainer, "generate", lambda model, tok, prompts, **kw: ["not a trajectory"] * len(prompts))
    trainer = RFTTrainer(RFTConfig(prompts_per_round=2, samples_per_prompt=2),
                         Verifier(get_domain("plant"), RulesIntegration().load("plant")))
    with pytest.raises(ValueError, match="none of 4 samples reached min_score 1.0"):
        trainer.train(base_path, _rlvr_rows(plant_data), tmp_path / "w", tmp_path / "o", [])
    assert not (tmp_path / "o" / "model.safetensors").exists()


@pytest.mark.parametrize("rounds,validated", [(2, [0, 2, 4]), (1, None)])
def test_rft_runs_rounds_and_publishes_the_best_validated_round(tmp_path, base_path, plant_data, rounds, validated):
    """Two rounds: the start and both rounds are validated and a round is published. One round: nothing
    to choose between (the start is never published), so no validation is spent."""
    rows = _rlvr_rows(plant_data)
    rows = [{**r, "role": "train"} for r in rows[:6]] + [{**r, "role": "validation"} for r in rows[6:]]
    spec = _spec(tmp_path, "rlvr", rows, {**RFT_TINY, "rounds": rounds}, base_path)
    summary = run_stage(spec, lambda row: None)
    from srl_assets.training.child import _write_summary
    _write_summary(spec, summary)
    assert summary["algorithm"] == "rft" and summary["steps"] == 2 * rounds
    assert [r["round"] for r in summary["rounds"]] == list(range(rounds)) and summary["kept"] == 2 * rounds
    if validated:
        assert [p["step"] for p in summary["validation"]] == validated
        assert summary["selected_step"] in validated[1:]
        assert (Path(spec["work_dir"]) / "round-0" / "model" / "config.json").is_file()  # a retry starts at round 1
        # A retry starts from round 0's saved model: round 0 is not sampled again (its samples file stays gone).
        (Path(spec["work_dir"]) / "round-0" / "samples.jsonl").unlink()
        again = run_stage(spec, lambda row: None)
        assert not (Path(spec["work_dir"]) / "round-0" / "samples.jsonl").exists()
        assert again["rounds"][0] == summary["rounds"][0] and again["validation"] == summary["validation"]
    else:
        assert "validation" not in summary and not (Path(spec["work_dir"]) / "round-0" / "model").exists()
    _reloads_and_generates(spec["out_dir"])


def test_killed_rft_child_resumes_without_sampling_again(tmp_path, base_path, plant_data):
    config = {**RFT_TINY, "sft_steps": 80, "save_steps": 2, "max_epochs": 1000.0}
    spec = _spec(tmp_path, "rlvr", _rlvr_rows(plant_data), config, base_path)
    samples = Path(spec["work_dir"]) / "round-0" / "samples.jsonl"
    first = {}

    def remember_samples():
        first["text"], first["stat"] = samples.read_text(), samples.stat()

    summary = _kill_after_first_checkpoint(spec, tmp_path, Path(spec["work_dir"]) / "round-0" / "sft", "checkpoint-2",
                                           before_resume=remember_samples)
    assert summary["steps"] == 80 and _resumed_step(summary["resumed_from"]) >= 2
    # The retry fine-tuned on the samples of the killed run: the same file, not a fresh draw.
    after = samples.stat()
    assert (after.st_ino, after.st_mtime_ns) == (first["stat"].st_ino, first["stat"].st_mtime_ns)
    assert [json.loads(line)["task"] for line in first["text"].splitlines()] == [0, 0, 1, 1]
