"""The training stages a child process runs. Each reads a JSON job spec, writes its model (when it
trains one) to ``out_dir`` and returns a JSON-able summary. No Dagster here: the same entry point
runs under Dagster Pipes, ``accelerate launch``, or by hand (``python -m srl_assets.training.child``).
Which stages may run in several processes at once: ``srl_assets.training.processes``.

Job spec keys (all stages): ``stage``, ``model_type``, ``rules_dir`` (null = packaged rules),
``work_dir`` (intermediate checkpoints; kept between retries), ``out_dir`` (the finished model),
``data`` (a JSONL file of input rows), ``config`` (the stage's hyperparameters), ``report_to``.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Callable

from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import Task
from srl_assets.prompts import TRAJECTORY_MAX_NEW_TOKENS
from srl_assets.registry import Registry
from srl_assets.rules_integration import RulesIntegration
from srl_assets.training.processes import require_splittable

Reporter = Callable[[dict[str, Any]], None]
STAGES: Registry[Callable[[dict[str, Any], Reporter], dict[str, Any]]] = Registry("training stage")
stage = STAGES.register


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """JSON lines, written aside and renamed: a reader (or a retry) never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def _verifier(spec: dict[str, Any]) -> Verifier:
    model_type = spec["model_type"]
    return Verifier(get_domain(model_type), RulesIntegration(spec.get("rules_dir")).load(model_type))


def run_stage(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    missing = {"stage", "model_type", "work_dir", "out_dir", "data", "config"} - set(spec)
    if missing:
        raise ValueError(f"job spec is missing {sorted(missing)}")
    run = STAGES.get(spec["stage"])
    require_splittable(spec["stage"], spec["config"])
    Path(spec["work_dir"]).mkdir(parents=True, exist_ok=True)
    Path(spec["out_dir"]).mkdir(parents=True, exist_ok=True)
    return run(spec, report)


@stage("base")
def base_stage(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    """Tiny Llama + local BPE tokenizer + short SFT, or any HF causal LM (optionally SFT'd too).

    Decides the checkpoint's prompt contract (config ``chat_template``: auto, on or off; see
    ``srl_assets.prompt_contract``); the SFT rows and every later stage follow it.
    """
    from srl_assets.models.sft import warm_start_sft
    from srl_assets.models.tiny import count_parameters, model_from_source, save_model
    from srl_assets.prompt_contract import attach, decide, parse_setting

    cfg = dict(spec["config"])
    chat_template = parse_setting(cfg.get("chat_template", "auto"))  # before loading a large model
    rows = read_rows(spec["data"])  # {"kind": "corpus"|"sft", "text"} / {"prompt", "completion"}
    corpus = [r["text"] for r in rows if r["kind"] == "corpus"]
    examples = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows if r["kind"] == "sft"]
    source = cfg.get("model_name_or_path")
    model, tokenizer = model_from_source(cfg, corpus, seed=int(cfg.get("seed", 0)))
    contract = decide(chat_template, tokenizer, source or None)
    attach(tokenizer, contract)  # save_model writes it into the checkpoint; later stages read it from there
    sft: dict[str, Any] = {"steps": 0}
    if int(cfg.get("sft_steps", 0)) > 0:
        from srl_assets.training.grpo_common import resume_point
        from srl_assets.training.progress_callback import TrainerProgress

        # The tokenizer and the fresh model are rebuilt deterministically from the same corpus, so
        # an interrupted warm start resumes from its last intermediate checkpoint.
        sft_dir = Path(spec["work_dir"]) / "sft"
        resumed_from = resume_point(sft_dir)
        sft = warm_start_sft(model, tokenizer, examples, sft_dir,
                             max_steps=int(cfg["sft_steps"]), lr=float(cfg.get("sft_lr", 1e-3)),
                             batch_size=int(cfg.get("sft_batch_size", 8)), seed=int(cfg.get("seed", 0)),
                             report_to=spec.get("report_to", []), save_steps=cfg.get("save_steps"),
                             resume_from_checkpoint=resumed_from,
                             callbacks=[TrainerProgress(report, "SFT steps")])
        sft["resumed_from"] = resumed_from
        report({"event": "sft_done", "final_loss": sft.get("final_loss"), "steps": sft.get("steps")})
    save_model(model, tokenizer, spec["out_dir"])
    return {"stage": "base", "source": source or "tiny-llama (built offline)", "resumed_from": sft.get("resumed_from"),
            "parameters": count_parameters(model), "sft_examples": len(examples), "sft": sft,
            "prompt_contract": contract.to_dict(),
            "raw_reward_history": [], "log": [{"step": i + 1, "loss": v} for i, v in enumerate(sft.get("loss_history", []))]}


@stage("rollouts")
def rollouts_stage(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    """Rollouts of a policy on step prompts, step rewards, normalization and dynamic sampling.

    The pool of step prompts is consumed in chunks: each chunk is rolled out, prompts whose rollout
    rewards have std <= eps are dropped, and the next chunk replaces them, until ``target_prompts``
    informative prompts are kept or the pool is exhausted.
    """
    from srl_assets.models.tiny import load_model
    from srl_assets.reward_normalizer import make_normalizer
    from srl_assets.srl.dynamic_sampling import filter_informative_groups, group_std
    from srl_assets.prompt_contract import render_prompt
    from srl_assets.srl.step_grpo import line_break_ids, rollout_steps, step_text
    from srl_assets.srl.step_reward import score_step

    cfg = spec["config"]
    n = int(cfg.get("num_generations", 4))
    target = int(cfg.get("target_prompts", 24))
    eps = float(cfg.get("dynamic_sampling_eps", 1e-3))
    pool = read_rows(spec["data"])  # {"task_id", "step_index", "prompt", "target"}, pre-shuffled
    model, tokenizer = load_model(spec["model_path"])
    stop_ids = line_break_ids(tokenizer)
    reward = cfg.get("reward", "field")
    normalizer = make_normalizer(cfg.get("normalizer", "group"))
    out: list[dict[str, Any]] = []
    kept = 0
    for start in range(0, len(pool), target):
        chunk = pool[start:start + max(1, target - kept)]
        prompts = [r["prompt"] for r in chunk for _ in range(n)]
        ids = rollout_steps(model, tokenizer, [render_prompt(tokenizer, p) for p in prompts],
                            int(cfg.get("max_completion_length", 160)),
                            float(cfg.get("temperature", 1.0)), float(cfg.get("top_p", 1.0)),
                            int(cfg.get("seed", 0)) + start, int(cfg.get("batch_size", 128)), stop_ids)
        completions = tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        raw = [score_step(step_text(prompts[i], c), chunk[i // n]["target"], reward) for i, c in enumerate(completions)]
        normalized = normalizer.normalize(raw, n)
        groups = [raw[i:i + n] for i in range(0, len(raw), n)]
        informative = (set(filter_informative_groups(groups, eps)) if cfg.get("dynamic_sampling", True)
                       else set(range(len(groups))))
        kept += len(informative)
        out.extend({"task_id": chunk[i // n]["task_id"], "step_index": chunk[i // n]["step_index"],
                    "rollout": i % n, "completion": c, "raw_reward": raw[i], "normalized_reward": normalized[i],
                    "group_std": group_std(groups[i // n]), "informative": (i // n) in informative}
                   for i, c in enumerate(completions))
        report({"event": "rollout_chunk", "prompts": len(chunk), "informative": len(informative), "kept": kept})
        if kept >= target:
            break
    write_rows(Path(spec["out_dir"]) / "rollouts.jsonl", out)
    raw_all = [r["raw_reward"] for r in out]
    return {"stage": "rollouts", "prompts": len(out) // n, "rollouts": len(out), "informative_prompts": kept,
            "reward": reward, "normalizer": cfg.get("normalizer", "group"), "normalizer_stats": normalizer.stats(),
            "raw_reward_mean": statistics.fmean(raw_all),
            "format_violation_rate": sum(r == -1.0 for r in raw_all) / len(raw_all)}


@stage("srl")
def srl_stage(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    """Step-wise GRPO against the expert's steps (``srl_assets.srl.step_grpo``); rows: {prompt, target}."""
    from srl_assets.srl.step_grpo import StepGRPOTrainer
    from srl_assets.training.configs import StepSRLConfig

    trainer = StepGRPOTrainer(StepSRLConfig.from_dict(spec["config"]))
    return trainer.train(spec["model_path"], read_rows(spec["data"]), Path(spec["work_dir"]),
                         Path(spec["out_dir"]), report)


@stage("rlvr")
def rlvr_stage(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    from srl_assets.rlvr.rlvr_trainer import RLVRInputs, RLVRTrainer

    config = dict(spec["config"])
    algorithm = config.pop("algorithm", "grpo")
    # Rows: {"prompt", "task", "role"}; role "validation" marks held-out tasks for checkpoint selection.
    rows = read_rows(spec["data"])
    train = [{"prompt": r["prompt"], "task": r["task"]} for r in rows if r.get("role", "train") == "train"]
    validation = [{"prompt": r["prompt"], "task": r["task"]} for r in rows if r.get("role") == "validation"]
    inputs = RLVRInputs(model_path=spec["model_path"], rows=train, validation=validation, verifier=_verifier(spec),
                        work_dir=Path(spec["work_dir"]), out_dir=Path(spec["out_dir"]),
                        report_to=spec.get("report_to", []), on_log=report,
                        run_name=f"rlvr-{algorithm}-{spec['model_type']}")
    return RLVRTrainer(algorithm, config).train(inputs)


@stage("evaluate")
def evaluate_stage(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    """Generation on held-out tasks for each candidate checkpoint (greedy unless the config sets a
    ``temperature``), verified."""
    from dataclasses import asdict

    from srl_assets.performance.evaluation import evaluate_checkpoint

    verifier = _verifier(spec)
    rows = read_rows(spec["data"])  # {"task": task row, "prompt"}
    tasks = [Task.from_row(r["task"]) for r in rows]
    prompts = [r["prompt"] for r in rows]
    max_new_tokens = int(spec["config"].get("max_new_tokens", TRAJECTORY_MAX_NEW_TOKENS))
    records = []
    for candidate, path in spec["config"]["candidates"].items():
        found = evaluate_checkpoint(candidate, path, tasks, prompts, verifier, max_new_tokens=max_new_tokens,
                                    temperature=float(spec["config"].get("temperature", 0.0)),
                                    seed=int(spec["config"].get("seed", 0)))
        report({"event": "evaluated", "candidate": candidate,
                "pass_rate": sum(r.passed for r in found) / len(found)})
        records.extend(found)
    write_rows(Path(spec["out_dir"]) / "records.jsonl", [asdict(r) for r in records])
    return {"stage": "evaluate", "records": len(records)}


@stage("compare")
def compare_stage(spec: dict[str, Any], report: Reporter) -> dict[str, Any]:
    """The recipe comparison (``srl_assets.training.recipes``): start + four recipes, evaluated paired."""
    from srl_assets.training.recipes import run_comparison

    return run_comparison(spec, _verifier(spec), report)
