"""Load on POST /v1/generate against the same model's generation + verification called directly.

Builds a throwaway Dagster home with a tiny checkpoint (published with LocalCheckpointStore, with the
catalog, report and selection rows the pipeline writes), starts the API as a real uvicorn process on
loopback, and for 1, 4 and 16 concurrent clients measures p50/p95 latency, requests per second and
errors. In the same run it loads the same checkpoint in this process and runs generation + verification
on the same tasks in batches of the same size as the number of clients, before and after each served
level (the server idles meanwhile): the direct throughput the service is compared with. CPU seconds
per request (the server process's, and this process's for direct) are printed too: on a shared machine
they move less with other load than wall time does. Not a test: several minutes on two cores.

    .venv/bin/python benchmarks/serve_load.py                  # prints a Markdown table
    .venv/bin/python benchmarks/serve_load.py --json out.json  # and writes the numbers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
from helpers.uvicorn_server import base_env, publish_tiny_checkpoint, serving_server, write_report  # noqa: E402

from srl_assets.collaboration.lore_retriever import policy_prompts  # noqa: E402
from srl_assets.collaboration.verifier import Verifier  # noqa: E402
from srl_assets.domains import get_domain  # noqa: E402
from srl_assets.dynamic_example_generator import DynamicExampleGenerator  # noqa: E402
from srl_assets.prompts import strip_think  # noqa: E402
from srl_assets.rules_integration import RulesIntegration  # noqa: E402

KEY = "bench-key"


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def load(url: str, params: list[dict], clients: int, model_type: str, max_new_tokens: int) -> dict:
    """``clients`` concurrent clients share the task list; each sends its next request when its last returns."""
    latencies: list[float] = []
    errors = 0
    queue = list(params)

    async def client(ac: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            p = queue.pop()
            t0 = time.perf_counter()
            try:
                r = await ac.post("/v1/generate", json={"model_type": model_type, "params": p, "n": 1,
                                                        "max_new_tokens": max_new_tokens})
                ok = r.status_code in (200, 409)  # a verified spec, or a well-formed "none passed"
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    async with httpx.AsyncClient(base_url=url, timeout=300, headers={"Authorization": f"Bearer {KEY}"},
                                 limits=httpx.Limits(max_connections=clients)) as ac:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(ac) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {"requests": len(params), "errors": errors, "rps": len(params) / wall,
            "p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 0.95)}


class Direct:
    """The same generation + verification in this process, ``batch`` prompts at a time."""

    def __init__(self, path: str, model_type: str, tasks, max_new_tokens: int):
        from srl_assets.models.tiny import load_model

        self.model, self.tokenizer = load_model(path)
        rules = RulesIntegration().load(model_type)
        self.verifier = Verifier(get_domain(model_type), rules)
        self.tasks, self.prompts = tasks, policy_prompts(tasks, rules, 0)
        self.max_new_tokens = max_new_tokens

    def rps(self, batch: int) -> float:
        from srl_assets.models.tiny import generate

        self.cpu_s = time.process_time()
        t0 = time.perf_counter()
        for start in range(0, len(self.tasks), batch):
            texts = generate(self.model, self.tokenizer, self.prompts[start:start + batch],
                             max_new_tokens=self.max_new_tokens, batch_size=batch)
            for task, text in zip(self.tasks[start:start + batch], texts, strict=True):
                self.verifier.verify_trajectory(task, strip_think(text))
        self.cpu_s = time.process_time() - self.cpu_s
        return len(self.tasks) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-type", default="tree")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=48, help="Requests per concurrency level.")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=128, help="128 x 4 layers: the pipeline's tiny default.")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="The server's SRL_API_BATCH_SIZE (default: the largest client count).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    home = Path(tempfile.mkdtemp(prefix="serve_load_"))
    mt = args.model_type
    row = publish_tiny_checkpoint(home, mt, "rlvr", hidden_size=args.hidden_size, layers=args.layers)
    write_report(str(home / "srl.duckdb"), mt, "bench", {"rlvr": {s: (5, 10) for s in get_domain(mt).skills}})
    domain, rules = get_domain(mt), RulesIntegration().load(mt)
    tasks = DynamicExampleGenerator(domain, rules).generate(args.requests, "train", 0)
    params = [t.params for t in tasks]
    levels = [int(c) for c in args.clients.split(",")]
    results = []
    env = base_env(home, SRL_API_KEYS=KEY, SRL_API_BATCH_SIZE=str(args.batch_size or max(levels)))
    server: dict = {}
    with serving_server(env, home / "uvicorn.log", info=server) as url:
        asyncio.run(load(url, params[:4], 1, mt, args.max_new_tokens))  # warm-up: loads the model once
        direct = Direct(str(home / "serving_cache" / row["sha256"][:16]), mt, tasks, args.max_new_tokens)
        direct.rps(4)  # warm-up
        for clients in levels:
            # Direct before and after the served run (the server idles meanwhile), so a change in the
            # machine's other load shows in both numbers rather than in their ratio.
            before, before_cpu = direct.rps(clients), direct.cpu_s
            cpu0 = process_cpu_s(server["pid"])
            served = asyncio.run(load(url, params, clients, mt, args.max_new_tokens))
            served_cpu = process_cpu_s(server["pid"]) - cpu0
            after, after_cpu = direct.rps(clients), direct.cpu_s
            # CPU seconds per request: less sensitive than wall time to what else the machine runs.
            results.append({"clients": clients, **served, "direct_rps": (before + after) / 2,
                            "direct_rps_before_after": [before, after],
                            "served_cpu_s_per_req": served_cpu / len(params),
                            "direct_cpu_s_per_req": (before_cpu + after_cpu) / 2 / len(params)})
            results[-1]["vs_direct"] = served["rps"] / results[-1]["direct_rps"]
        status = httpx.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {KEY}"}).json()
    print(f"model type {mt}, tiny Llama hidden {args.hidden_size} x {args.layers} layers, {args.requests} requests "
          f"per level, max_new_tokens {args.max_new_tokens}, {os.cpu_count()} CPU cores; server: "
          f"{status['generation']}")
    print("| clients | requests | errors | p50 (s) | p95 (s) | req/s | direct req/s (same batch) | served / direct "
          "| CPU s/req served | CPU s/req direct |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | "
              f"{r['rps']:.2f} | {r['direct_rps']:.2f} | {100 * r['vs_direct']:.0f}% | "
              f"{r['served_cpu_s_per_req']:.3f} | {r['direct_cpu_s_per_req']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2))


if __name__ == "__main__":
    main()
