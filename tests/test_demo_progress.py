"""`make demo` keeps the console to progress lines: a real demo run (one model type, the data assets
and a tiny base model trained in a Pipes child) shows each stage and the warm start's bar on the
console, while the trainer's own output and Dagster's log lines go to the run's logs."""

import io
import os
import subprocess
import sys
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml

from srl_assets.demo import run_partition
from srl_assets.progress import ConsoleProgress, bar
from srl_assets.training.progress_callback import TrainerProgress

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64}
RUN_CONFIG = {"ops": {
    "task_examples": {"config": {"n_train": 8, "n_eval": 4, "seed": 3}},
    "base_model": {"config": {"tiny": TINY, "vocab_size": 300, "sft_steps": 8, "sft_trajectories": 8,
                              "sft_batch_size": 4}},
}}
ASSETS = ["rules", "task_examples", "trajectories", "srl_steps", "base_model"]


def _state(step, total, main=True):
    return SimpleNamespace(global_step=step, max_steps=total, is_world_process_zero=main)


@pytest.mark.parametrize("total, updates, expected_steps", [
    (1000, 20, [1, *range(50, 1001, 50)]),  # a 1,000-step warm start: 21 rows, not 1,000
    (3, 20, [1, 2, 3]),                      # fewer steps than updates: every step
    (10, 2, [1, 5, 10]),                     # the first step, each half, and the last
])
def test_trainer_progress_reports_a_bounded_number_of_rows(total, updates, expected_steps):
    rows = []
    callback = TrainerProgress(rows.append, "SFT steps", updates=updates)
    for step in range(1, total + 1):
        callback.on_step_end(None, _state(step, total), None)
    assert [r["step"] for r in rows] == expected_steps
    assert all(r == {"event": "progress", "step": r["step"], "total": total, "what": "SFT steps"} for r in rows)


def test_trainer_progress_is_silent_on_other_processes():
    rows = []
    callback = TrainerProgress(rows.append)
    for step in range(1, 5):
        callback.on_step_end(None, _state(step, 4, main=False), None)
    assert rows == []


def test_console_progress_without_a_terminal_prints_milestones_and_a_closing_line():
    out = io.StringIO()
    progress = ConsoleProgress(out, live=False)
    progress.stage_started("base_model")
    for step in range(1, 101):
        progress.stage_progress("base_model", step, 100, "SFT steps")
    progress.stage_finished("base_model", ok=True)
    progress.stage_started("srl_checkpoint")
    progress.stage_finished("srl_checkpoint", ok=False, error="boom")
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines[:3]] == ["25/100", "50/100", "75/100"]
    assert lines[0].split()[1] == bar(25, 100)
    assert lines[3].startswith("  base_model") and "done in" in lines[3] and "(100 SFT steps)" in lines[3]
    assert "FAILED" in lines[4] and lines[4].endswith("boom")
    assert len(lines) == 5


def test_console_progress_on_a_terminal_redraws_one_line():
    out = io.StringIO()
    progress = ConsoleProgress(out, live=True)
    progress.stage_started("base_model")
    for step in range(1, 11):
        progress.stage_progress("base_model", step, 10)
    progress.stage_finished("base_model", ok=True)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") >= 11 and "10/10 steps" in text


def test_demo_console_shows_progress_and_the_run_logs_keep_the_trainer_output(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(open("dagster.yaml").read())
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(RUN_CONFIG))
    env = {**os.environ, "DAGSTER_HOME": str(home), "WANDB_MODE": "disabled",
           "SRL_DUCKDB_PATH": str(tmp_path / "srl.duckdb"), "SRL_CHECKPOINT_ROOT": str(tmp_path / "checkpoints")}
    done = subprocess.run([sys.executable, "-m", "srl_assets.demo", "--model-types", "plant",
                           "--config", str(config), "--assets", *ASSETS],
                          env=env, capture_output=True, text=True, timeout=300)
    console = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(console)
    print("\n".join(console))  # shown with -s: what a user sees
    # One header, one line per stage, the bar's milestones, the closing lines: nothing else.
    for asset in ASSETS:
        assert any(line.startswith(f"  {asset} ") and "done in" in line for line in console), (asset, console)
    assert any(line.startswith("  base_model") and "[" in line and "/8 SFT steps" in line for line in console)
    assert len(console) <= 20, "\n".join(console)
    assert not any("'loss'" in line or "dagster - " in line or "[pipes]" in line for line in console), console

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        [run] = instance.get_runs()
        records = instance.get_records_for_run(run.run_id, limit=10_000).records
        messages = [r.event_log_entry.user_message for r in records if r.event_log_entry.step_key == "base_model"]
        assert any('"event": "sft_done"' in m for m in messages)  # the child's metrics rows (Pipes)
        assert any('"event": "progress"' in m for m in messages)
        # The trainer's per-step output is in the run's captured stdout/stderr, which the UI shows.
        [capture] = [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event
                     and r.event_log_entry.dagster_event.event_type == dg.DagsterEventType.LOGS_CAPTURED]
        log_key = instance.compute_log_manager.build_log_key_for_run(run.run_id, capture.logs_captured_data.file_key)
        logs = instance.compute_log_manager.get_log_data(log_key)
        captured = (logs.stdout or b"").decode() + (logs.stderr or b"").decode()
        assert captured.count("'loss'") >= 8, captured[-2000:]
    finally:
        instance.dispose()
    [log_file] = (home / "logs").glob("demo-*.log")
    assert "'loss'" in log_file.read_text()


def test_run_events_follow_a_retry_and_a_failure_with_real_dagster_events():
    attempts = []
    parts = dg.StaticPartitionsDefinition(["a"])

    @dg.asset(partitions_def=parts, retry_policy=dg.RetryPolicy(max_retries=1))
    def flaky(context: dg.AssetExecutionContext):
        context.log.info('{"event": "progress", "step": 1, "total": 2, "what": "SFT steps"}')
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("lost the GPU")

    @dg.asset(partitions_def=parts, deps=[flaky])
    def broken():
        raise ValueError("rules.yaml: field 'data.fuels' is missing")

    @dg.asset(partitions_def=parts)
    def child(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
        script = "from dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes():\n    1 / 0\n"
        pipes.run(command=[sys.executable, "-c", script], context=context)

    job = dg.Definitions(assets=[flaky, broken, child], resources={"pipes": dg.PipesSubprocessClient()},
                         executor=dg.in_process_executor).resolve_implicit_global_asset_job_def()
    out = io.StringIO()
    with dg.instance_for_test() as instance:
        result = run_partition(job, instance, "a", {}, ConsoleProgress(out, live=False))
    assert not result.success
    lines = out.getvalue().splitlines()
    assert len(lines) == 6, lines
    # The Pipes child's own exception, not "External execution process failed with code 1".
    [child_line] = [line for line in lines if line.startswith("  child ")]
    assert "FAILED" in child_line and child_line.endswith("ZeroDivisionError: division by zero")
    lines.remove(child_line)
    assert "1/2 SFT steps" in lines[0] and lines[0].startswith("  flaky")
    assert "failed, retrying," in lines[1] and lines[1].endswith("lost the GPU")
    assert "1/2 SFT steps" in lines[2] and "done in" in lines[3] and "(1 SFT steps)" in lines[3]
    assert lines[4].startswith("  broken") and "FAILED" in lines[4]
    assert lines[4].endswith("ValueError: rules.yaml: field 'data.fuels' is missing")
