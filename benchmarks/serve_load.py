"""Load on POST /v1/generate against the same model's generation + verification called directly.

Builds a throwaway Dagster home with a tiny checkpoint (published with LocalCheckpointStore, with the
catalog, report and selection rows the pipeline writes), starts the API as a real uvicorn process on
loopback, and for 1, 4 and 16 concurrent closed-loop clients measures p50/p95 latency, requests per
second and errors. In the same run it loads the same checkpoint in this process and runs generation
(``srl_assets.models.tiny.generate``) + verification on the same tasks in static batches of as many
prompts as there are clients, before and after each served level (the server idles meanwhile): the
direct throughput the service is compared with. Both sides use the same torch thread count
(``--torch-threads``).

Printed too: CPU seconds per request of the server (its process and its generation worker process),
of the direct path, and of the load generator (all three share the machine's cores); and the mean
rows per decoding step of the server's continuous batch (16 = every client's request decoding).

Fairness notes (why the load generator is what it is): the clients speak plain HTTP/1.1 over asyncio
streams (``--client httpx`` for comparison), because httpx costs ~1.4 ms of CPU per request on the
same two cores as the server (~10% of a request's generation), which is the load generator's cost,
not the server's; and the server's listening socket has TCP_NODELAY set (``tests/helpers/
uvicorn_server.py``): uvicorn takes a socket handed over with ``--fd`` for a Unix socket and leaves
Nagle on, so every response waited ~40 ms for a delayed ACK (a loopback /health took 48 ms instead of
0.8 ms), which `make serve` (``--host/--port``) never does. Not a test: a minute or more on two cores.

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
    """User + system CPU seconds of a process (all its threads) and its live child processes (the
    server's generation worker), from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def generation(url: str) -> dict:
    """The server's generation counters (GET /v1/status)."""
    return httpx.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {KEY}"}).json()["generation"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _post_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes) -> int:
    """One POST on a kept-alive HTTP/1.1 connection; the status code (the body is read and dropped)."""
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def load(url: str, params: list[dict], clients: int, model_type: str, max_new_tokens: int,
               client_kind: str = "raw") -> dict:
    """``clients`` concurrent clients share the task list; each sends its next request when its last returns.

    ``raw`` clients speak HTTP/1.1 over asyncio streams (keep-alive, one connection each): the load
    generator shares the machine's two cores with the server, and httpx costs ~1.4 ms of CPU per request
    (measured), ~10% of a request's generation, which would count against the server. ``httpx``
    clients are kept for comparison.
    """
    latencies: list[float] = []
    errors = 0
    queue = list(params)
    host, port = url.removeprefix("http://").split(":")

    def body(p: dict) -> bytes:
        return json.dumps({"model_type": model_type, "params": p, "n": 1, "max_new_tokens": max_new_tokens}).encode()

    async def raw_client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        head = (f"POST /v1/generate HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {KEY}\r\n"
                "Content-Type: application/json\r\nContent-Length: ").encode()
        try:
            while queue:
                p = queue.pop()
                t0 = time.perf_counter()
                try:
                    ok = await _post_raw(reader, writer, head, body(p)) in (200, 409)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                latencies.append(time.perf_counter() - t0)
                errors += not ok
        finally:
            writer.close()

    async def httpx_client(ac: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            p = queue.pop()
            t0 = time.perf_counter()
            try:
                r = await ac.post("/v1/generate", content=body(p), headers={"Content-Type": "application/json"})
                ok = r.status_code in (200, 409)  # a verified spec, or a well-formed "none passed"
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    t0 = time.perf_counter()
    if client_kind == "raw":
        await asyncio.gather(*(raw_client() for _ in range(clients)))
    else:
        async with httpx.AsyncClient(base_url=url, timeout=300, headers={"Authorization": f"Bearer {KEY}"},
                                     limits=httpx.Limits(max_connections=clients)) as ac:
            await asyncio.gather(*(httpx_client(ac) for _ in range(clients)))
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
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of both the direct path and the server's generation worker. 1 by "
                             "default: at this size a second thread does not speed a step up, and on a shared "
                             "2-core machine two threads wait on each other (48 requests: 0.7 s with one "
                             "thread, 6-32 s with two, at load average 4).")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="The load generator: plain HTTP/1.1 over asyncio streams (lean), or httpx.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)
    home = Path(tempfile.mkdtemp(prefix="serve_load_"))
    mt = args.model_type
    row = publish_tiny_checkpoint(home, mt, "rlvr", hidden_size=args.hidden_size, layers=args.layers)
    write_report(str(home / "srl.duckdb"), mt, "bench", {"rlvr": {s: (5, 10) for s in get_domain(mt).skills}})
    domain, rules = get_domain(mt), RulesIntegration().load(mt)
    tasks = DynamicExampleGenerator(domain, rules).generate(args.requests, "train", 0)
    params = [t.params for t in tasks]
    levels = [int(c) for c in args.clients.split(",")]
    results = []
    env = base_env(home, SRL_API_KEYS=KEY, SRL_API_BATCH_SIZE=str(args.batch_size or max(levels)),
                   SRL_API_TORCH_THREADS=str(args.torch_threads))
    server: dict = {}
    with serving_server(env, home / "uvicorn.log", info=server) as url:
        asyncio.run(load(url, params[:4], 1, mt, args.max_new_tokens, args.client))  # warm-up: loads the model once
        direct = Direct(str(home / "serving_cache" / row["sha256"][:16]), mt, tasks, args.max_new_tokens)
        direct.rps(4)  # warm-up
        for clients in levels:
            # Direct before and after the served run (the server idles meanwhile), so a change in the
            # machine's other load shows in both numbers rather than in their ratio.
            before, before_cpu = direct.rps(clients), direct.cpu_s
            cpu0, gen0 = process_cpu_s(server["pid"]), generation(url)
            client_cpu0 = time.process_time()
            served = asyncio.run(load(url, params, clients, mt, args.max_new_tokens, args.client))
            client_cpu = time.process_time() - client_cpu0
            served_cpu, gen1 = process_cpu_s(server["pid"]) - cpu0, generation(url)
            steps = gen1["decoding_steps"] - gen0["decoding_steps"]
            after, after_cpu = direct.rps(clients), direct.cpu_s
            # CPU seconds per request: less sensitive than wall time to what else the machine runs.
            results.append({"clients": clients, **served, "direct_rps": (before + after) / 2,
                            "direct_rps_before_after": [before, after],
                            "served_cpu_s_per_req": served_cpu / len(params),
                            "client_cpu_s_per_req": client_cpu / len(params),
                            "rows_per_step": (gen1["rows_decoded"] - gen0["rows_decoded"]) / max(1, steps),
                            "direct_cpu_s_per_req": (before_cpu + after_cpu) / 2 / len(params)})
            results[-1]["vs_direct"] = served["rps"] / results[-1]["direct_rps"]
        status = {"generation": generation(url)}
    print(f"model type {mt}, tiny Llama hidden {args.hidden_size} x {args.layers} layers, {args.requests} requests "
          f"per level, max_new_tokens {args.max_new_tokens}, {os.cpu_count()} CPU cores, torch threads "
          f"{args.torch_threads}, {args.client} clients, load average {os.getloadavg()[0]:.1f}; server: "
          f"{status['generation']}")
    print("| clients | requests | errors | p50 (s) | p95 (s) | req/s | direct req/s (same batch) | served / direct "
          "| CPU s/req served | CPU s/req direct | CPU s/req clients | rows per decoding step |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | "
              f"{r['rps']:.2f} | {r['direct_rps']:.2f} | {100 * r['vs_direct']:.0f}% | "
              f"{r['served_cpu_s_per_req']:.3f} | {r['direct_cpu_s_per_req']:.3f} | "
              f"{r['client_cpu_s_per_req']:.4f} | {r['rows_per_step']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2))


if __name__ == "__main__":
    main()
