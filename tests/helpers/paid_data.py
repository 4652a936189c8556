"""Tasks, expert trajectories and a responder with a known pass rate, for the paid fine-tuning tests."""

from __future__ import annotations

import hashlib

from resources.rules import RulesResource
from srl_assets.collaboration.lore_retriever import policy_prompts
from srl_assets.dynamic_example_generator import DynamicExampleGenerator, Task
from srl_assets.paid.datasets import build_source, mutated_samples
from srl_assets.trajectory import render_trajectory

MODEL_TYPE = "personality"


def expert(domain, rules, task: Task) -> str:
    plan = domain.plan(task.params, rules)
    return render_trajectory(plan.steps, plan.spec)


def trajectory_rows(n: int = 12, seed: int = 3, model_type: str = MODEL_TYPE):
    """(rows shaped like the ``trajectories`` table, their tasks, domain, rules)."""
    domain, rules = RulesResource().load(model_type)
    tasks = DynamicExampleGenerator(domain, rules).generate(n, "train", seed)
    rows = [{"model_type": model_type, "task_id": t.task_id, "prompt": t.prompt, "lore": "",
             "trajectory": expert(domain, rules, t)} for t in tasks]
    return rows, tasks, domain, rules


def source(n: int = 12, seed: int = 3):
    rows, tasks, domain, rules = trajectory_rows(n, seed)
    return build_source(MODEL_TYPE, rows, tasks, domain, rules, lore_k=0)[0]


def good_fraction_responder(domain, rules, tasks: list[Task], lore_k: int, fraction: float = 0.7):
    """A chat responder: the expert trajectory for ``fraction`` of the tasks (chosen by a hash of the
    task id), a mutated one (fails the verifier) for the rest. Returns (responder, number good)."""
    answers, good = {}, 0
    for task, prompt in zip(tasks, policy_prompts(tasks, rules, lore_k), strict=True):
        right = expert(domain, rules, task)
        bucket = int(hashlib.sha256(task.task_id.encode()).hexdigest()[:8], 16) % 1000
        if bucket < fraction * 1000:
            answers[prompt], good = right, good + 1
        else:
            answers[prompt] = mutated_samples(domain, rules, task, right)[1]

    def respond(request: dict) -> str:
        user = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
        return answers.get(user, "not a task prompt")

    return respond, good


def tiny_checkpoint(out_dir, texts: list[str]):
    """An untrained tiny Llama saved as a checkpoint folder (its samples fail the verifier)."""
    from srl_assets.models.tiny import TinyModelConfig, build_tiny_model, save_model, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    cfg = TinyModelConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                          num_key_value_heads=4, intermediate_size=64, max_position_embeddings=1024)
    return save_model(build_tiny_model(tokenizer, cfg, seed=0), tokenizer, out_dir)
