"""The recipe comparison (srl_assets/training/recipes.py): its input rows keep the start's and the
experts' trajectories apart and rebuild the experts from their step instances; the ``compare`` stage
trains the start and the four recipes on a tiny model within the step budget, evaluates all five on
the same tasks, publishes every model, skips finished recipes on a retry, and refuses bad settings."""

import json
from pathlib import Path

import pytest

from srl_assets.collaboration.lore_retriever import LoreRetriever, lore_block
from srl_assets.collaboration.teacher_planner import make_teacher
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.prompts import task_prompt
from srl_assets.rlvr.verifier_reward import task_column
from srl_assets.rules_integration import RulesIntegration
from srl_assets.training.configs import StepSRLConfig
from srl_assets.training.recipes import CANDIDATES, DONE, RECIPES, SRL_RECIPE_DEFAULTS, comparison_rows
from srl_assets.training.stages import read_rows, run_stage, write_rows

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 1024}
CONFIG = {
    # round(2 * 0.75) = 2 SRL steps would leave RLVR none: each part of SRL->RLVR still gets one.
    "budget_steps": 2, "srl_share": 0.75, "sft_batch_size": 2, "seed": 0,
    "start": {"vocab_size": 300, "tiny": TINY, "sft_steps": 2, "sft_batch_size": 2},
    # update / learning_rate / reward left out: the comparison's own SRL defaults fill them in (SRL_RECIPE_DEFAULTS)
    "srl": {"num_generations": 3, "prompts_per_step": 2, "max_completion_length": 16, "save_steps": 0},
    "rlvr": {"prompts_per_round": 2, "samples_per_prompt": 2, "max_new_tokens": 24, "min_score": 0.0,
             "batch_size": 2, "empty_round": "skip"},
    "evaluate": {"max_new_tokens": 16},
}


@pytest.fixture(scope="module")
def plant():
    rules = RulesIntegration().load("plant")
    domain = get_domain("plant")
    generator = DynamicExampleGenerator(domain, rules)
    retriever = LoreRetriever(rules, k=1)
    teacher = make_teacher("procedural", domain, rules)
    trajectories = []
    for task in generator.generate(5, "train", 1):
        trajectories.append({"task_id": task.task_id, "task_text": task.prompt,
                             "lore": lore_block(retriever.retrieve(task)), "trajectory": teacher.plan(task, [])})
    pairs = lambda tasks: [(t, task_prompt(t.prompt, lore_block(retriever.retrieve(t)))) for t in tasks]  # noqa: E731
    rl, held_out = pairs(generator.generate(2, "train", 7)), pairs(generator.generate(4, "eval", 3))
    return trajectories, [p.text for p in rules.lore][:5], rl, held_out


def test_comparison_rows_keep_start_and_expert_apart_and_steps_rebuild_the_experts(plant):
    trajectories, lore, rl, held_out = plant
    rows = comparison_rows(trajectories, lore, 2, 3, rl, held_out, task_column)
    by_kind = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r)
    start, expert = by_kind["start"], by_kind["expert"]
    assert [r["completion"] for r in start] == [t["trajectory"] for t in trajectories[:2]]
    assert [r["task_id"] for r in expert] == [t["task_id"] for t in trajectories[2:5]]
    assert {r["prompt"] for r in start}.isdisjoint(r["prompt"] for r in expert)
    assert {r["completion"] for r in start}.isdisjoint(r["trajectory"] for r in expert)
    # Every prompt is the evaluation's: the task prompt, and for a step the expert's earlier steps.
    for r in expert:
        t = next(t for t in trajectories if t["task_id"] == r["task_id"])
        assert r["prompt"] == task_prompt(t["task_text"], t["lore"])
        steps = sorted((s for s in by_kind["step"] if s["task_id"] == r["task_id"]), key=lambda s: s["step_index"])
        assert [s["step_index"] for s in steps] == list(range(1, len(steps) + 1)) and len(steps) > 1
        assert "\n".join(s["target"] for s in steps) == r["trajectory"].strip()
        for s in steps:  # prompt + target, line after line, spells the trajectory out (no title hint)
            assert s["prompt"] == r["prompt"] + "".join(p["target"] + "\n" for p in steps[:s["step_index"] - 1])
    assert {s["task_id"] for s in by_kind["step"]} == {r["task_id"] for r in expert}  # no step of the start's
    assert [r["prompt"] for r in by_kind["rl"]] == [p for _, p in rl]
    assert [r["task"] for r in by_kind["eval"]] == [task_column(t) for t, _ in held_out]
    assert len(by_kind["corpus"]) == len(lore) + 2 * len(trajectories)


def test_comparison_rows_name_the_counts_when_too_few_trajectories_exist(plant):
    trajectories, lore, rl, held_out = plant
    with pytest.raises(ValueError, match=r"needs 3 start \+ 4 expert trajectories = 7, but only 5 exist"):
        comparison_rows(trajectories, lore, 3, 4, rl, held_out, task_column)


def _spec(tmp_path: Path, rows, config) -> dict:
    write_rows(tmp_path / "input.jsonl", rows)
    return {"stage": "compare", "model_type": "plant", "rules_dir": None, "work_dir": str(tmp_path / "work"),
            "out_dir": str(tmp_path / "out"), "data": str(tmp_path / "input.jsonl"), "config": config,
            "report_to": []}


def _mtimes(models: Path) -> dict[str, int]:
    return {name: (models / name / "model.safetensors").stat().st_mtime_ns for name in CANDIDATES}


def test_compare_stage_trains_evaluates_and_retries_only_what_is_unfinished(tmp_path, plant):
    trajectories, lore, rl, held_out = plant
    spec = _spec(tmp_path, comparison_rows(trajectories, lore, 2, 3, rl, held_out, task_column), CONFIG)
    events = []
    summary = run_stage(spec, events.append)

    assert summary["recipes"] == list(CANDIDATES) and summary["eval_tasks"] == 4
    assert (summary["start_trajectories"], summary["expert_trajectories"], summary["rl_tasks"]) == (2, 3, 2)
    records = read_rows(Path(spec["out_dir"]) / "records.jsonl")
    eval_ids = [t.task_id for t, _ in held_out]
    for name in CANDIDATES:  # paired: every candidate on every held-out task, once
        assert sorted(r["task_id"] for r in records if r["candidate"] == name) == sorted(eval_ids)
        assert (Path(spec["out_dir"]) / "models" / name / "model.safetensors").is_file()
    assert len(records) == 5 * 4
    # The budget: the same optimizer steps per recipe; SRL->RLVR splits them by srl_share.
    info = summary["candidates"]
    assert info["start"]["steps"] == 2
    assert {name: info[name]["steps"] for name in RECIPES} == {name: 2 for name in RECIPES}
    assert [(p["trainer"], p["steps"]) for p in info["srl_rlvr"]["parts"]] == [("srl", 1), ("rlvr", 1)]
    assert [(p["trainer"], p["steps"]) for p in info["srl"]["parts"]] == [("srl", 2)]
    # a spec that leaves SRL's settings out runs the comparison's SRL (what the asset would send), not
    # StepSRLConfig's dataclass defaults (GRPO at 3e-4)
    assert {k: info["srl"]["parts"][0][k] for k in ("update", "learning_rate")} == {
        "update": SRL_RECIPE_DEFAULTS["update"], "learning_rate": SRL_RECIPE_DEFAULTS["learning_rate"]}
    assert SRL_RECIPE_DEFAULTS["update"] != StepSRLConfig().update
    assert info["srl"]["generated_tokens"] > 0 and info["rlvr"]["generated_tokens"] > 0
    assert info["sft"]["generated_tokens"] == 0
    assert sum(e.get("event") == "evaluated" for e in events) == 5
    models = Path(spec["work_dir"]) / "models"
    for name in CANDIDATES:
        assert json.loads((models / name / DONE).read_text())["steps"] == info[name]["steps"]
    assert not [p.name for p in models.iterdir() if p.name.endswith((".tmp", ".work")) or ".part" in p.name]

    # A retry (the op failed after training, say) reuses every finished model; an unfinished one is redone.
    before = _mtimes(models)
    (models / "srl" / DONE).unlink()
    again = run_stage(spec, lambda row: None)
    after = _mtimes(models)
    assert {n for n in CANDIDATES if after[n] != before[n]} == {"srl"}
    for name in set(CANDIDATES) - {"srl"}:
        assert again["candidates"][name]["seconds"] == info[name]["seconds"]
        assert again["candidates"][name].get("parts") == info[name].get("parts")
    assert (models / "srl" / DONE).is_file() and again["candidates"]["srl"]["steps"] == 2
    assert len(read_rows(Path(spec["out_dir"]) / "records.jsonl")) == 5 * 4


@pytest.mark.parametrize(("change", "named"), [
    ({"recipes": ["sft", "dpo"]}, r"unknown recipes \['dpo'\]"),
    ({"budget_steps": 1}, r"budget_steps must be >= 2 .*got 1"),
    ({"srl_share": 1.0}, r"srl_share must be in \(0, 1\), got 1.0"),
])
def test_compare_stage_refuses_bad_settings_by_value(tmp_path, plant, change, named):
    trajectories, lore, rl, held_out = plant
    spec = _spec(tmp_path, comparison_rows(trajectories, lore, 2, 3, rl, held_out, task_column),
                 {**CONFIG, **change})
    with pytest.raises(ValueError, match=named):
        run_stage(spec, lambda row: None)
    assert not (Path(spec["work_dir"]) / "models" / "start").exists()  # refused before training anything


def test_compare_input_without_a_kind_it_needs_is_refused(tmp_path, plant):
    trajectories, lore, rl, held_out = plant
    rows = [r for r in comparison_rows(trajectories, lore, 2, 3, rl, held_out, task_column) if r["kind"] != "rl"]
    with pytest.raises(ValueError, match="compare input has no 'rl' rows"):
        run_stage(_spec(tmp_path, rows, CONFIG), lambda row: None)


def test_the_same_config_gives_the_same_start_and_another_seed_another(tmp_path, plant):
    """The start is built and fine-tuned from the config alone: an unseeded initialisation once moved the
    same config's facial start from 0.485 to 0.225 between two runs, more than any recipe's gain."""
    from safetensors.torch import load_file

    trajectories, lore, rl, held_out = plant
    rows = comparison_rows(trajectories, lore, 2, 3, rl, held_out, task_column)
    weights = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        spec = _spec(tmp_path / name, rows, {**CONFIG, "recipes": ["sft"], "seed": seed})
        run_stage(spec, lambda row: None)
        weights[name] = load_file(Path(spec["out_dir"]) / "models" / "start" / "model.safetensors")
    assert weights["a"].keys() == weights["b"].keys()
    assert all(weights["a"][k].equal(weights["b"][k]) for k in weights["a"])
    assert not all(weights["a"][k].equal(weights["c"][k]) for k in weights["a"])


def test_the_base_stage_is_reproducible_from_its_config(tmp_path, plant):
    """The demo's base_model likewise: the same config, the same weights; another seed, other weights."""
    from safetensors.torch import load_file

    trajectories = plant[0]
    rows = [{"kind": "corpus", "text": t["trajectory"]} for t in trajectories]
    rows += [{"kind": "sft", "prompt": task_prompt(t["task_text"], t["lore"]), "completion": t["trajectory"]}
             for t in trajectories]
    weights = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        write_rows(tmp_path / name / "input.jsonl", rows)
        spec = {"stage": "base", "model_type": "plant", "rules_dir": None, "work_dir": str(tmp_path / name / "work"),
                "out_dir": str(tmp_path / name / "out"), "data": str(tmp_path / name / "input.jsonl"),
                "config": {"vocab_size": 300, "tiny": TINY, "sft_steps": 2, "sft_batch_size": 2, "seed": seed},
                "report_to": []}
        run_stage(spec, lambda row: None)
        weights[name] = load_file(Path(spec["out_dir"]) / "model.safetensors")
    assert all(weights["a"][k].equal(weights["b"][k]) for k in weights["a"])
    assert not all(weights["a"][k].equal(weights["c"][k]) for k in weights["a"])
