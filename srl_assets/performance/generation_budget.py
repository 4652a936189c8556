"""Whether a generation budget fits the expert trajectories: a trajectory longer than the tokens the policy may
write can never be written whole, so a task that needs one fails in evaluation and gives RLVR no verified sample,
whatever the policy learned. No Dagster here: the performance report's ``generation_budget_fits_experts`` check
calls it with the base checkpoint's folder (its tokenizer.json, read with the tokenizers library alone; transformers
only for a checkpoint without one)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def trajectory_tokens(checkpoint_dir: str | Path, trajectories: Iterable[str]) -> list[int]:
    """Each trajectory's length as the policy writes it with the checkpoint's tokenizer: its tokens plus the
    end-of-sequence token that ends a generated trajectory."""
    texts = list(trajectories)
    path = Path(checkpoint_dir) / "tokenizer.json"
    if path.is_file():  # the fast tokenizer alone (tokenizers): no need to import transformers to count tokens
        from tokenizers import Tokenizer

        encoded = Tokenizer.from_file(str(path)).encode_batch(texts, add_special_tokens=False) if texts else []
        return [len(e.ids) + 1 for e in encoded]
    from transformers import AutoTokenizer  # a checkpoint with only a slow tokenizer's files

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{checkpoint_dir}: no tokenizer to count the expert trajectories' tokens with "
                         f"({exc})") from exc
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]


def budget_fits(lengths: list[int], max_new_tokens: int) -> tuple[bool, dict[str, int]]:
    """(passed, metadata): passed when no expert trajectory is longer than ``max_new_tokens``.

    >>> budget_fits([300, 344, 200], 320)
    (False, {'generation_budget': 320, 'expert_trajectories': 3, 'longest_expert_trajectory': 344, 'over_budget': 1})
    >>> budget_fits([], 320)[0]
    True
    """
    over = sum(n > max_new_tokens for n in lengths)
    return over == 0, {"generation_budget": max_new_tokens, "expert_trajectories": len(lengths),
                       "longest_expert_trajectory": max(lengths, default=0), "over_budget": over}
