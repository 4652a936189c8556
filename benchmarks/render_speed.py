"""How long a preview takes: per model type, mean and p95 milliseconds per rendered image.

Renders the teacher's spec of ``--n`` held-out tasks per model type (after one warm-up render, which
pays for font loading), ``--repeat`` times each, and prints a table. The target is under 200 ms per
image; the report's gallery renders 12 images per model type (4 tasks x base, SRL, RLVR).

    .venv/bin/python benchmarks/render_speed.py --n 10 --repeat 3

The machine's load average is printed too: on a shared machine the times scale with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from srl_assets.domains import MODEL_TYPES, get_domain  # noqa: E402
from srl_assets.dynamic_example_generator import DynamicExampleGenerator  # noqa: E402
from srl_assets.previews import render  # noqa: E402
from srl_assets.rules_integration import RulesIntegration  # noqa: E402

TARGET_MS = 200.0


def measure(model_type: str, n: int, repeat: int, seed: int) -> dict[str, float]:
    domain, rules = get_domain(model_type), RulesIntegration().load(model_type)
    specs = [domain.plan(t.params, rules).spec for t in DynamicExampleGenerator(domain, rules).generate(n, "eval", seed)]
    render(model_type, specs[0])  # warm-up: fonts, imports
    times, cpu = [], []
    for _ in range(repeat):
        for spec in specs:
            t0, c0 = time.perf_counter(), time.process_time()
            render(model_type, spec)
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    return {"images": len(times), "mean_ms": float(np.mean(times)), "p95_ms": float(np.percentile(times, 95)),
            "max_ms": float(np.max(times)), "cpu_mean_ms": float(np.mean(cpu))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="held-out tasks per model type")
    parser.add_argument("--repeat", type=int, default=3, help="renders of each spec")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpus {os.cpu_count()}, load average {load:.2f}; target < {TARGET_MS:.0f} ms per image")
    # CPU ms is what one render costs without competition: on a loaded machine wall time waits.
    print(f"{'model type':<12} {'images':>6} {'mean ms':>8} {'p95 ms':>8} {'max ms':>8} {'cpu ms':>8}")
    results = {}
    for model_type in MODEL_TYPES:
        row = results[model_type] = measure(model_type, args.n, args.repeat, args.seed)
        flag = "" if row["p95_ms"] < TARGET_MS else "  over target"
        print(f"{model_type:<12} {row['images']:>6} {row['mean_ms']:>8.1f} {row['p95_ms']:>8.1f} "
              f"{row['max_ms']:>8.1f} {row['cpu_mean_ms']:>8.1f}{flag}")
    gallery_s = sum(r["mean_ms"] for r in results.values()) * 12 / 1000
    print(f"a gallery of 12 images for each of the {len(results)} model types: ~{gallery_s:.1f} s of rendering")
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
