"""A real uvicorn process for the serving API on loopback, and the pipeline tables it reads.

``serving_server(env)`` binds a free loopback port here and hands the socket to uvicorn (``--fd``), so
there is no race for the port; it waits for ``/health`` and stops the process afterwards.
``write_report`` writes what ``performance_report`` and ``model_selection`` write, through the same
code (PerformanceTracker, DynamicModelSelector, DuckDBStore); ``publish_tiny_checkpoint`` builds a
tiny model like the pipeline's base model and publishes it with LocalCheckpointStore + a catalog row.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import httpx
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
APP = "srl_assets.serving.app:create_app"


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRL_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "SRL_API_HOST": "127.0.0.1", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)})
    env.update(extra)
    return env


@contextlib.contextmanager
def serving_server(env: dict[str, str], log_path: Path, timeout_s: float = 60.0,
                   info: dict | None = None) -> Iterator[str]:
    """Yields the base URL; ``info["pid"]`` is the uvicorn process id when ``info`` is given."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this. uvicorn wraps an --fd socket as AF_UNIX, so it never sets
    # TCP_NODELAY (it does for --host/--port, as `make serve` runs it): with Nagle on, a response written
    # in two parts waits ~40 ms for the client's delayed ACK (a loopback /health: 48 ms, not 0.8 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", APP, "--fd", str(sock.fileno()),
                                 "--log-level", "warning"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=[sock.fileno()])
    sock.close()  # the child holds its own copy
    if info is not None:
        info["pid"] = proc.pid
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not answer /health in {timeout_s} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_expecting_exit(env: dict[str, str], timeout_s: float = 30.0) -> tuple[int, str]:
    """Run uvicorn that should refuse to start; (exit code, output)."""
    proc = subprocess.run([sys.executable, "-m", "uvicorn", "--factory", APP, "--host", env["SRL_API_HOST"],
                           "--port", "0"], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    return proc.returncode, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------
# Pipeline tables


def write_report(duckdb_path: str, model_type: str, report_id: str, evidence: dict[str, dict[str, tuple[int, int]]],
                 created_at: datetime | None = None,
                 latency_s: float | dict[str, float] = 0.1) -> None:
    """``evidence``: candidate -> skill -> (passed, n); writes history, skills and selection rows.
    ``latency_s``: one latency for all candidates, or one per candidate."""
    from resources.duckdb_store import DuckDBStore
    from srl_assets.domains import get_domain
    from srl_assets.performance.performance_tracker import EvalRecord, PerformanceTracker, per_skill_rows, report_rows
    from srl_assets.selection.dynamic_model_selector import Candidate, DynamicModelSelector

    store = DuckDBStore(database=duckdb_path, lock_timeout_s=30)
    created = (created_at or datetime.now(timezone.utc)).isoformat()
    records = []
    for candidate, skills in evidence.items():
        for skill, (passed, n) in skills.items():
            for i in range(n):
                ok = i < passed
                records.append(EvalRecord(candidate, f"{skill}-{i}", (skill,), ok, 1.0 if ok else 0.0,
                                          () if ok else (skill,), True, 40,
                                          latency_s[candidate] if isinstance(latency_s, dict) else latency_s))
    reports = PerformanceTracker().summarize(records, model_type, list(get_domain(model_type).skills))
    store.append("performance_history", pd.DataFrame(report_rows(reports, report_id=report_id, model_type=model_type,
                                                                 created_at=created)).assign(seed=0, rules_version="t"))
    store.append("performance_skills", pd.DataFrame(per_skill_rows(reports, report_id=report_id,
                                                                   model_type=model_type, created_at=created)))
    candidates = {r.candidate: Candidate(r.candidate, "local", 0.0, r.mean_latency_s) for r in reports}
    per_skill: dict = {}
    for r in reports:
        for skill, stat in r.per_skill.items():
            per_skill.setdefault(skill, {})[r.candidate] = stat
    selections = DynamicModelSelector().select_all(model_type, per_skill, candidates)
    store.replace_partition("model_selection", model_type, pd.DataFrame(
        [{**asdict(s), "report_id": report_id} for s in selections]).astype(
        {"runner_up": pd.StringDtype(), "runner_up_score": "float64", "margin": "float64"}))


def publish_tiny_checkpoint(home: Path, model_type: str, stage: str, hidden_size: int = 32,
                            layers: int = 1) -> dict:
    """A tiny Llama + BPE tokenizer trained on the model type's teacher trajectories, published like
    ``publish_checkpoint`` does (store + ``checkpoints`` catalog row); returns the catalog row."""
    from resources.checkpoint_store import LocalCheckpointStore
    from resources.duckdb_store import DuckDBStore
    from srl_assets.domains import get_domain
    from srl_assets.dynamic_example_generator import DynamicExampleGenerator
    from srl_assets.models.tiny import TinyModelConfig, build_tiny_model, save_model, train_bpe_tokenizer
    from srl_assets.rules_integration import RulesIntegration
    from srl_assets.trajectory import render_trajectory

    domain, rules = get_domain(model_type), RulesIntegration().load(model_type)
    tasks = DynamicExampleGenerator(domain, rules).generate(16, "train", 1)
    corpus = [t.prompt for t in tasks] + [render_trajectory(*_plan(domain, rules, t)) for t in tasks]
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=512)
    cfg = TinyModelConfig(vocab_size=512, hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2,
                          num_key_value_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=1024)
    model = build_tiny_model(tokenizer, cfg, seed=0)
    out = home / "work" / f"{stage}-{model_type}"
    save_model(model, tokenizer, out)
    key = f"{stage}/{model_type}/test-run"
    info = LocalCheckpointStore(root=str(home / "checkpoints")).publish(str(out), key)
    row = {"model_type": model_type, "stage": stage, "key": key, "uri": info.uri, "sha256": info.sha256,
           "size_bytes": info.size_bytes, "run_id": "test-run",
           "created_at": (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()}
    DuckDBStore(database=str(home / "srl.duckdb"), lock_timeout_s=30).append("checkpoints", pd.DataFrame([row]))
    return row


def _plan(domain, rules, task):
    plan = domain.plan(task.params, rules)
    return plan.steps, plan.spec
