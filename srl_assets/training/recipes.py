"""The recipe comparison: from one common start, SFT-only, RLVR-only, SRL-only and SRL->RLVR, each
evaluated with the start on the same held-out tasks (paired). No Dagster here: the ``compare`` stage
runs it in a training child, the ``recipe_comparison`` asset prepares the rows and reports.

What each recipe may use, and what is matched:

* Expert trajectories (designer-checked examples, the scarce resource): the same ``expert`` rows for
  every recipe that uses them. SFT-only fine-tunes on the whole trajectories; SRL uses their step
  instances (the evaluation prompt plus the expert's steps 1..k-1, target step k). RLVR-only uses none:
  only the verifier, on fresh training tasks.
* The start: its own trajectories (``start`` rows), disjoint from the expert rows, so it knows the
  domain's language and the output format without having seen the trajectories the recipes compete over.
* Compute: the same number of optimizer steps per recipe (``budget_steps``); SRL->RLVR spends
  ``srl_share`` of them on SRL and the rest on RLVR. Rollouts are not optimizer steps: the summary
  reports each recipe's generated tokens and wall seconds beside its steps, so the other two ways of
  matching can be read off the same run.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS
from srl_assets.training.configs import SRL_DEFAULTS, RFTConfig, StepSRLConfig

RECIPES = ("sft", "rlvr", "srl", "srl_rlvr")
CANDIDATES = ("start", *RECIPES)
DONE = "recipe.json"  # written last into a finished recipe's model folder: a retry skips that recipe

# RLVR's RFT in the comparison, where it differs from RFTConfig's (the pipeline's RLVR stage) defaults; the
# ``recipe_comparison`` asset's config takes its defaults from here too. Both recipes that use RLVR share it.
# - empty_round "skip": a round whose samples all fail leaves the policy as it is (RLVR with no signal learns
#   nothing) instead of stopping the comparison.
# - learning_rate 3e-4, not 1e-3: SRL->RLVR's RFT part runs half of RLVR-only's steps, and 30 RFT steps at 1e-3
#   leave the model below where they started (plant 0.365 -> 0.355, facial 0.415 -> 0.410), where 60 recover
#   and gain. Chosen on a validation draw of held-out tasks (eval_seed 999, not make compare's 4242): over the
#   seven types RLVR-only's mean pass rate is 0.269 at both 1e-3 and 3e-4, SRL->RLVR's 0.218 and 0.268
#   (docs/experiments.md, "RLVR's learning rate in the comparison").
# - prompts_per_round 400: the comparison's tables were measured with it (the pipeline's RLVR stage samples 800).
RFT_DEFAULTS: dict[str, Any] = {"empty_round": "skip", "learning_rate": 3e-4, "prompts_per_round": 400}
# SRL in the comparison: the pipeline SRL stage's settings (SRL_DEFAULTS; max_steps comes from the budget). Its
# history here: the step rewards select (update 'rft': a likelihood step on the members whose `field` reward
# reaches 1.0) instead of weighing a policy gradient: over three starts per type (make compare's tasks, seeds 0-2
# pooled), SRL-only beat the start in 6 of 7 types (GRPO: 5 of 7) and SRL->RLVR beat RLVR-only in 4 of 7 (GRPO: 1
# of 7); at lr 1e-3 the same update took every type below its start (docs/experiments.md, "SRL's step rewards for
# rejection sampling"). Then 48 step instances x 4 members (2 the expert's) at 3e-4 instead of 16 x 8 at 1e-4: the
# same rollouts per step (48 x 2 = 16 x 6 = 96), three times the distinct expert steps per likelihood step; pooled
# over seeds 0-2, SRL-only beat the start in 6 of 7 (4 significant; 16 x 8: 6, 2 significant), SRL->RLVR RLVR-only
# in 4 of 7 (16 x 8: 4) (docs/experiments.md, "Three times the expert steps per SRL step"). The pipeline's SRL stage
# took the same settings after them ("An SRL stage that shows its effect").
SRL_RECIPE_DEFAULTS: dict[str, Any] = dict(SRL_DEFAULTS)
# The comparison's settings a spec may leave out, with the defaults the ``recipe_comparison`` asset's config
# takes from here too, so a spec without a field runs what the asset would have sent. budget_steps: optimizer
# steps per recipe (the matched compute; SRL->RLVR: srl_share of them SRL, the rest RFT); sft_*: SFT-only's.
COMPARISON_DEFAULTS: dict[str, Any] = {"budget_steps": 60, "srl_share": 0.5, "sft_lr": 1e-3, "sft_batch_size": 8,
                                       "seed": 0}
# The common start's SFT on its own trajectories (the asset's StartConfig; its per-type steps come from there).
START_DEFAULTS: dict[str, Any] = {"sft_steps": 800, "sft_lr": 3e-3, "sft_batch_size": 8}


def comparison_rows(trajectories: list[dict[str, str]], lore_texts: list[str], start_trajectories: int,
                    expert_trajectories: int, rl: list[tuple[Any, str]], held_out: list[tuple[Any, str]],
                    task_column: Callable[[Any], str]) -> list[dict[str, Any]]:
    """The compare stage's input rows.

    ``trajectories``: {task_id, task_text, lore (as the policy sees it), trajectory}, in a stable
    order: the first ``start_trajectories`` train the start, the next ``expert_trajectories`` are the
    experts the recipes share. ``rl`` / ``held_out``: (task, prompt) pairs of fresh training tasks
    (RLVR) and of held-out evaluation tasks.
    """
    from srl_assets.prompts import task_prompt
    from srl_assets.srl.step_instances import build_step_instances

    need = start_trajectories + expert_trajectories
    if len(trajectories) < need:
        raise ValueError(f"the comparison needs {start_trajectories} start + {expert_trajectories} expert "
                         f"trajectories = {need}, but only {len(trajectories)} exist: materialize more "
                         "task_examples / trajectories or lower the counts")
    trajectories = [{**t, "prompt": task_prompt(t["task_text"], t["lore"])} for t in trajectories]
    start, expert = trajectories[:start_trajectories], trajectories[start_trajectories:need]
    rows: list[dict[str, Any]] = [{"kind": "corpus", "text": t} for t in lore_texts]
    rows += [{"kind": "corpus", "text": t[k]} for t in trajectories for k in ("prompt", "trajectory")]
    rows += [{"kind": "start", "prompt": t["prompt"], "completion": t["trajectory"]} for t in start]
    rows += [{"kind": "expert", "task_id": t["task_id"], "prompt": t["prompt"], "trajectory": t["trajectory"]}
             for t in expert]
    for t in expert:  # the evaluation prompt + expert steps 1..k-1 -> step k (srl_assets/prompts.py)
        rows += [{"kind": "step", "task_id": t["task_id"], "step_index": step.step_index, "prompt": step.prompt,
                  "target": step.target, "last": step.step_index == step.n_steps}
                 for step in build_step_instances(t["task_id"], t["task_text"], t["lore"], t["trajectory"],
                                                  show_next_title=False)]
    rows += [{"kind": "rl", "prompt": p, "task": task_column(task)} for task, p in rl]
    rows += [{"kind": "eval", "prompt": p, "task": task_column(task)} for task, p in held_out]
    return rows


def _split(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {k: [] for k in ("corpus", "start", "expert", "step", "rl", "eval")}
    for i, row in enumerate(rows):
        kind = row.get("kind")
        if kind not in kinds:
            raise ValueError(f"compare input row {i}: unknown kind {kind!r}; expected one of {sorted(kinds)}")
        kinds[kind].append(row)
    for kind in ("start", "expert", "step", "rl", "eval"):
        if not kinds[kind]:
            raise ValueError(f"compare input has no {kind!r} rows")
    return kinds


def _finished(folder: Path) -> dict[str, Any] | None:
    marker = folder / DONE
    return json.loads(marker.read_text()) if marker.is_file() else None


def _work(folder: Path) -> Path:
    return folder.parent / f"{folder.name}.work"


def _publish(tmp: Path, final: Path, info: dict[str, Any]) -> None:
    (tmp / DONE).write_text(json.dumps(info))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def run_comparison(spec: dict[str, Any], verifier, report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train the start and the four recipes, evaluate all five; returns the summary (records in out_dir)."""
    from srl_assets.models.sft import warm_start_sft
    from srl_assets.models.tiny import load_model, model_from_source, save_model
    from srl_assets.performance.evaluation import evaluate_checkpoint
    from srl_assets.rlvr.rft_trainer import RFTTrainer
    from srl_assets.rlvr.verifier_reward import parse_task_column
    from srl_assets.srl.step_grpo import StepGRPOTrainer
    from srl_assets.training.stages import read_rows, write_rows

    cfg = {**COMPARISON_DEFAULTS, **spec["config"]}
    rows = _split(read_rows(spec["data"]))
    work, out = Path(spec["work_dir"]), Path(spec["out_dir"])
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    budget = int(cfg["budget_steps"])
    if budget < 2:
        raise ValueError(f"budget_steps must be >= 2 (SRL->RLVR splits it), got {budget}")
    share = float(cfg["srl_share"])
    if not 0 < share < 1:
        raise ValueError(f"srl_share must be in (0, 1), got {share}")
    recipes = list(cfg.get("recipes", RECIPES))
    unknown = set(recipes) - set(RECIPES)
    if unknown:
        raise ValueError(f"unknown recipes {sorted(unknown)}; known: {list(RECIPES)}")
    sft_lr, sft_batch = float(cfg["sft_lr"]), int(cfg["sft_batch_size"])
    seed = int(cfg["seed"])
    info: dict[str, dict[str, Any]] = {}

    def stage_done(name: str, what: str) -> None:
        report({"event": "progress", "step": list(CANDIDATES).index(name) + 1, "total": len(CANDIDATES),
                "what": f"recipes ({what})"})

    # The start: a tiny Llama built offline (or a pretrained model), fine-tuned briefly on its own slice.
    start_dir = models / "start"
    info["start"] = _finished(start_dir) or {}
    if not info["start"]:
        t0 = time.perf_counter()
        start_cfg = {**START_DEFAULTS, **cfg.get("start", {})}
        model, tokenizer = model_from_source(start_cfg, [r["text"] for r in rows["corpus"]], seed=seed)
        steps = int(start_cfg["sft_steps"])
        result = warm_start_sft(model, tokenizer, [{"prompt": r["prompt"], "completion": r["completion"]}
                                                   for r in rows["start"]],
                                work / "start_sft", max_steps=steps, lr=float(start_cfg["sft_lr"]),
                                batch_size=int(start_cfg["sft_batch_size"]), seed=seed,
                                report_to=[]) if steps else {"steps": 0}
        tmp = models / "start.tmp"
        save_model(model, tokenizer, tmp)
        info["start"] = {"steps": int(result.get("steps", 0)), "generated_tokens": 0,
                         "seconds": round(time.perf_counter() - t0, 1), "trajectories": len(rows["start"])}
        _publish(tmp, start_dir, info["start"])
    stage_done("start", "start")

    expert_sft = [{"prompt": r["prompt"], "completion": r["trajectory"]} for r in rows["expert"]]
    step_rows = [{"prompt": r["prompt"], "target": r["target"], "last": bool(r.get("last", False))}
                 for r in rows["step"]]
    rl_rows = [{"prompt": r["prompt"], "task": r["task"]} for r in rows["rl"]]

    def sft(src: Path, dst: Path, steps: int) -> dict[str, Any]:
        model, tokenizer = load_model(src)
        result = warm_start_sft(model, tokenizer, expert_sft, _work(dst), max_steps=steps, lr=sft_lr,
                                batch_size=sft_batch, seed=seed, report_to=[])
        save_model(model, tokenizer, dst)
        return {"steps": int(result["steps"]), "generated_tokens": 0}

    def srl(src: Path, dst: Path, steps: int) -> dict[str, Any]:
        config = StepSRLConfig.from_dict({**SRL_RECIPE_DEFAULTS, **cfg.get("srl", {}), "max_steps": steps,
                                          "seed": seed})
        summary = StepGRPOTrainer(config).train(str(src), step_rows, _work(dst), dst)
        return {"steps": summary["steps"], "generated_tokens": summary["generated_tokens"],
                "final_step_reward": summary["raw_reward_history"][-1], "update": config.update,
                "learning_rate": config.learning_rate}

    def rlvr(src: Path, dst: Path, steps: int) -> dict[str, Any]:
        values = {**RFT_DEFAULTS, **cfg.get("rlvr", {}), "sft_steps": steps, "seed": seed}
        config = RFTConfig(**{**values, "prompts_per_round": min(int(values.get("prompts_per_round", 400)),
                                                                  len(rl_rows) // int(values.get("rounds", 1)))})
        summary = RFTTrainer(config, verifier).train(str(src), rl_rows, _work(dst), dst, [])
        tokens = sum(r.get("generated_tokens", 0) for r in summary["rounds"])
        return {"steps": summary["steps"], "generated_tokens": tokens, "kept": summary["kept"]}

    srl_steps = min(budget - 1, max(1, round(budget * share)))  # each part gets >= 1 step
    plans: dict[str, list[tuple[Callable, int]]] = {
        "sft": [(sft, budget)], "rlvr": [(rlvr, budget)], "srl": [(srl, budget)],
        "srl_rlvr": [(srl, srl_steps), (rlvr, budget - srl_steps)]}
    for name in recipes:
        final = models / name
        info[name] = _finished(final) or {}
        if not info[name]:
            t0 = time.perf_counter()
            src, parts = start_dir, []
            for i, (train, steps) in enumerate(plans[name]):
                dst = models / f"{name}.part{i}"
                shutil.rmtree(dst, ignore_errors=True)
                shutil.rmtree(_work(dst), ignore_errors=True)
                parts.append({"trainer": train.__name__, **train(src, dst, steps)})
                src = dst
            info[name] = {"steps": sum(p["steps"] for p in parts),
                          "generated_tokens": sum(p["generated_tokens"] for p in parts),
                          "seconds": round(time.perf_counter() - t0, 1), "parts": parts}
            _publish(src, final, info[name])
            for i in range(len(plans[name])):
                shutil.rmtree(models / f"{name}.part{i}", ignore_errors=True)
                shutil.rmtree(_work(models / f"{name}.part{i}"), ignore_errors=True)
        stage_done(name, name)

    evaluate = cfg.get("evaluate", {})
    tasks = [parse_task_column(r["task"]) for r in rows["eval"]]
    prompts = [r["prompt"] for r in rows["eval"]]
    max_new_tokens = int(evaluate.get("max_new_tokens", TRAJECTORY_MAX_NEW_TOKENS))
    records = []
    for name in ["start", *recipes]:
        t0 = time.perf_counter()
        found = evaluate_checkpoint(name, str(models / name), tasks, prompts, verifier, max_new_tokens=max_new_tokens,
                                    batch_size=int(evaluate.get("batch_size", 64)))
        info[name]["eval_seconds"] = round(time.perf_counter() - t0, 1)
        records.extend(found)
        report({"event": "evaluated", "candidate": name, "pass_rate": sum(r.passed for r in found) / len(found)})
    write_rows(out / "records.jsonl", [asdict(r) for r in records])
    for name in ["start", *recipes]:  # the models travel with the output (published by the asset)
        shutil.copytree(models / name, out / "models" / name, dirs_exist_ok=True)
    return {"stage": "compare", "recipes": ["start", *recipes], "budget_steps": budget, "srl_share": share,
            "expert_trajectories": len(rows["expert"]), "step_instances": len(step_rows),
            "start_trajectories": len(rows["start"]), "rl_tasks": len(rl_rows), "eval_tasks": len(tasks),
            "candidates": info, "raw_reward_history": [], "log": []}
