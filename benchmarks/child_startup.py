"""Training-child start-up: a cold child against a warm-started one (srl_assets/training/warm_start.py),
side by side.

Each child runs ``python -m srl_assets.models.sft`` (the base stage's trainer module, which imports TRL's
``SFTTrainer``, transformers and torch, and does nothing else), so what is timed is the start-up a stage
pays before its first step: the interpreter and those imports (cold), or a fork from the server that
imported them (warm). The server's own start (the imports, once per run and environment) is printed apart.
The environment is a training child's (``child_env``, as run_child sets it, with wandb offline). Not a test:
about a minute on 2 cores. The last line is ``speedup: N.NNx`` (cold over warm, median per child).

    .venv/bin/python benchmarks/child_startup.py [--children 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from resources.wandb_resource import WandbResource
from srl_assets.assets.training_support import child_env
from srl_assets.training.warm_start import WarmStarter


def run_once(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}): {done.stderr[-500:]}")
    if "cold" in done.stderr:
        raise RuntimeError(f"the warm child ran cold: {done.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=5, help="children per path (a demo type starts 5)")
    args = parser.parse_args()
    cold_cmd = [sys.executable, "-m", "srl_assets.models.sft"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**{k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ},
               **child_env(WandbResource(mode="offline", dir=tmp))}
        cold = [run_once(cold_cmd, env) for _ in range(args.children)]
        starter = WarmStarter(root=tmp)
        start = time.perf_counter()
        warm_cmd = starter.command(cold_cmd, env)
        server_s = time.perf_counter() - start
        if not starter.servers:
            raise SystemExit("the warm-start server did not start")
        warm = [run_once(warm_cmd, env) for _ in range(args.children)]
        starter.close()
    print(f"server start (imports, once per run): {server_s:.2f} s")
    for name, times in (("cold", cold), ("warm", warm)):
        print(f"{name}: median {statistics.median(times):.3f} s per child  ({', '.join(f'{t:.3f}' for t in times)})")
    print(f"saved per {args.children} children: {sum(cold) - sum(warm) - server_s:.1f} s after the server's start")
    print(f"speedup: {statistics.median(cold) / statistics.median(warm):.2f}x")


if __name__ == "__main__":
    main()
