"""Rollout throughput: HF ``generate`` against the lean sampler (srl_assets/models/sampler.py), side by side.

Builds the demo's policy shape (the tiny Llama of the base_model asset's defaults: hidden 64, 2 layers,
SwiGLU 128, a BPE vocabulary trained on plant prompts and trajectories, ~0.14M parameters) or loads a
checkpoint (``--model``), and decodes the demo's plant prompts (lore_k 0, as the pipeline evaluates)
at temperature 0.7 and 320 new tokens with batch sizes 16, 64 and 256, each path on the same batches
in one run, on torch's default threads (one per core), as the pipeline samples. A freshly built model
writes EOS now and then at random (rows wrote 74-82% of the 320-token budget in the 2026-12-02 run); a
trained checkpoint stops rows at the end of a trajectory, which the lean sampler turns into fewer rows per
step (HF keeps them).

Also measures the machine's float32 matmul throughput in the same run; the matmul-bound limit for the
model is that rate over 2 x parameters FLOPs per new token (attention over the cache comes on top).
Not a test: a few minutes on 2 cores. The last line is ``speedup: N.NNx`` (lean over HF at --main-batch).

    .venv/bin/python benchmarks/rollout_throughput.py
    .venv/bin/python benchmarks/rollout_throughput.py --model .dagster_home/checkpoints/base/tree/<run>
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.models.sampler import SAMPLERS
from srl_assets.models.tiny import (TinyModelConfig, build_tiny_model, count_parameters, format_param_count,
                                    load_model, train_bpe_tokenizer)
from srl_assets.rules_integration import RulesIntegration
from srl_assets.trajectory import render_trajectory

# The base_model asset's defaults (srl_assets/assets/training.py BaseModelConfig).
DEMO_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128}


def matmul_gflops(n: int = 512, seconds: float = 1.0) -> float:
    """Best float32 GEMM rate (n x n x n) over ``seconds``, on torch's threads: the machine's matmul roof."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t0))
    return best / 1e9


def plant_policy(n_tasks: int, model_path: str | None):
    rules, domain = RulesIntegration().load("plant"), get_domain("plant")
    tasks = DynamicExampleGenerator(domain, rules).generate(n_tasks, "eval", 7)
    prompts = policy_prompts(tasks, rules, 0)
    if model_path:
        model, tokenizer = load_model(model_path, device="cpu")
        return model.eval(), tokenizer, prompts
    trajectories = []
    for task in tasks:
        plan = domain.plan(task.params, rules)
        trajectories.append(render_trajectory(plan.steps, plan.spec))
    tokenizer = train_bpe_tokenizer(prompts + trajectories, vocab_size=1024)
    model = build_tiny_model(tokenizer, TinyModelConfig(vocab_size=len(tokenizer), **DEMO_TINY), seed=0)
    return model.eval(), tokenizer, prompts


def run_batch(name: str, model, ids, mask, max_new_tokens: int, temperature: float, eos: int) -> tuple[int, float]:
    """New tokens written (EOS counted, padding after it not) and wall seconds for one batch."""
    sample = SAMPLERS.get(name)
    t0 = time.perf_counter()
    with torch.inference_mode():
        new = sample(model, ids, mask, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos,
                     temperature=temperature)
    seconds = time.perf_counter() - t0
    rows = new.tolist() if torch.is_tensor(new) else new
    return sum(row.index(eos) + 1 if eos in row else len(row) for row in rows), seconds


def compare(model, batches, max_new_tokens: int, temperature: float, eos: int, repeats: int) -> dict[str, float]:
    """New tokens/s of each path over ``batches``, ``repeats`` times. The paths alternate batch by batch
    (and which goes first), so a load that comes and goes on a shared machine falls on both alike."""
    done = {"hf": [0, 0.0], "fast": [0, 0.0]}
    order = ["hf", "fast"]
    for _ in range(repeats):
        for ids, mask in batches:
            for name in order:
                torch.manual_seed(0)
                tokens, seconds = run_batch(name, model, ids, mask, max_new_tokens, temperature, eos)
                done[name][0] += tokens
                done[name][1] += seconds
            order.reverse()
    return {name: tokens / seconds for name, (tokens, seconds) in done.items()} | {
        f"{name}_tokens": tokens for name, (tokens, _) in done.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a checkpoint folder (default: the demo's shape, freshly built)")
    parser.add_argument("--batch-sizes", default="16,64,256")
    parser.add_argument("--main-batch", type=int, default=64,
                        help="the shape of the speedup line: RFT decodes 64 trajectories at once")
    parser.add_argument("--prompts", type=int, default=256, help="prompts decoded per batch size, path and pass")
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=2, help="passes over the prompts per batch size")
    parser.add_argument("--threads", type=int, default=0, help=(
        "torch threads. 0 (default): torch's default, one per core, the setting the pipeline samples with "
        "(its training children and the in-process evaluation leave torch's thread count alone). 1 is "
        "steadier on a shared machine: with another process busy on one of two cores, two threads made both "
        "paths 10-20x slower (every small op waits for the busy core)"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    if args.main_batch not in sizes:
        parser.error(f"--main-batch {args.main_batch} is not one of --batch-sizes {sizes}")

    model, tokenizer, prompts = plant_policy(max(args.prompts, max(sizes)), args.model)
    params = count_parameters(model)
    gflops = matmul_gflops()
    limit = gflops * 1e9 / (2 * params)
    print(f"model: {format_param_count(params)} parameters ({params}); torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"matmul: {gflops:.0f} GFLOP/s float32 -> matmul-bound limit {limit:,.0f} new tokens/s (2 x params "
          f"FLOPs per token)", flush=True)
    # Warm both paths up (first-call allocations, lazy imports) on a small batch.
    warm = tokenizer(prompts[:4], return_tensors="pt", padding=True)
    compare(model, [(warm["input_ids"], warm["attention_mask"])], 8, args.temperature, tokenizer.eos_token_id, 1)

    print("\n| batch | HF generate tok/s | HF / matmul limit | lean sampler tok/s | lean / matmul limit | speedup "
          "| new tokens HF / lean |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    speedups = {}
    for size in sizes:
        batches = []
        for start in range(0, args.prompts, size):
            enc = tokenizer(prompts[start:start + size], return_tensors="pt", padding=True)
            batches.append((enc["input_ids"], enc["attention_mask"]))
        rates = compare(model, batches, args.max_new_tokens, args.temperature, tokenizer.eos_token_id,
                        args.repeats)
        speedups[size] = rates["fast"] / rates["hf"]
        print(f"| {size} | {rates['hf']:,.0f} | {rates['hf'] / limit:.1%} | {rates['fast']:,.0f} "
              f"| {rates['fast'] / limit:.1%} | {speedups[size]:.2f}x "
              f"| {rates['hf_tokens']} / {rates['fast_tokens']} |", flush=True)
    print(f"\nspeedup: {speedups[args.main_batch]:.2f}x")


if __name__ == "__main__":
    main()
