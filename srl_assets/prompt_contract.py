"""The prompt contract: how a checkpoint expects its prompts, read from the model folder by every consumer.

A prompt's *text* is one thing everywhere (``prompts.task_prompt`` / ``step_prompt``: what the hosted
models of ``paid/`` get as their user message too). How that text becomes the model's input is a
property of the checkpoint, decided once by the base stage and inherited by every later stage:

* off (the tiny default): the raw text, exactly as ``task_prompt`` writes it. The tiny model has no chat
  pretraining to preserve, and the SFT data, RL rollouts, evaluation and serving all feed it that text.
* on (a pretrained instruct model): the text as the user turn of the tokenizer's chat template, after
  an optional system turn, with the generation prompt (``add_generation_prompt=True``): the format the
  model was instruction-tuned on. An SRL step prompt (the task prompt followed by the expert's first
  steps) puts those steps after the generation prompt: they are the start of the model's answer.

``save_model`` writes the contract next to the weights (``prompt_contract.json``); ``load_model``
reads it back and attaches it to the tokenizer, so ``generate``, the SFT warm start, RFT, the GRPO
datasets and serving all render prompts the same way without any configuration of their own. A
folder without the file (a checkpoint from before the contract, a hub name) is off: every earlier
checkpoint was trained on raw text.

Rendered text is what ``tokenizer(text)`` must see, with its default ``add_special_tokens=True``, the
call TRL makes on plain-text prompts. A template that writes the BOS token itself would give a
tokenizer that also adds one on encoding (Llama 3, Gemma) two of them, so the rendered text drops its
leading BOS for such a tokenizer (the tiny and Qwen tokenizers add none).

>>> PromptContract.from_dict({"use_chat_template": True, "system": None})
PromptContract(use_chat_template=True, system=None)
>>> parse_setting("maybe")
Traceback (most recent call last):
...
ValueError: chat_template must be one of auto, on, off; got 'maybe'
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

CONTRACT_FILE = "prompt_contract.json"
SETTINGS = ("auto", "on", "off")
# Where the policy's answer starts: ``prompts.task_prompt`` ends with it (a test holds them together).
ANSWER_MARKER = "\nPlan:\n"
_ATTR = "srl_prompt_contract"  # where load_model/attach keep the contract on a tokenizer object

# The system turn of a chat-template checkpoint; the hosted models of paid/ get the same one, so every
# instruct model, local or hosted, reads the same system + user messages.
DEFAULT_SYSTEM = ("You write game content specs. Answer with numbered steps `N. **Title** action`; "
                  "the last step, titled `Final spec`, is the JSON spec.")


@dataclass(frozen=True)
class PromptContract:
    """How prompt text becomes model input. The default is the raw text (the tiny model's format)."""

    use_chat_template: bool = False  # render the prompt as a user turn of the tokenizer's chat template
    system: str | None = None  # a system turn before it (chat template only); None = none

    def __post_init__(self) -> None:
        if not isinstance(self.use_chat_template, bool):
            raise ValueError(f"use_chat_template must be true or false, got {self.use_chat_template!r}")
        if self.system is not None and not isinstance(self.system, str):
            raise ValueError(f"system must be a string or null, got {self.system!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "prompt contract") -> PromptContract:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; valid: use_chat_template, system")
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


RAW = PromptContract()


def parse_setting(value: Any) -> str:
    """Check a ``chat_template`` setting (``auto``, ``on`` or ``off``), naming the bad value."""
    if value not in SETTINGS:
        raise ValueError(f"chat_template must be one of {', '.join(SETTINGS)}; got {value!r}")
    return value


def decide(setting: str, tokenizer, source: str | Path | None, system: str | None = DEFAULT_SYSTEM) -> PromptContract:
    """The base stage's choice for a model loaded from ``source`` (None: the tiny model built offline).

    ``auto``: a checkpoint folder that has a contract keeps it; otherwise the chat template exactly
    when a pretrained model's tokenizer has one (an instruct model), and the raw text for the tiny
    model (its tokenizer ships a template, but nothing is trained on it). ``on`` needs a template;
    ``off`` is the raw text.
    """
    setting = parse_setting(setting)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if setting == "on" and not has_template:
        raise ValueError(f"chat_template: on, but the tokenizer of {source or 'the tiny model'} has no chat "
                         "template; use auto or off")
    if setting == "auto" and source is not None and (Path(source) / CONTRACT_FILE).is_file():
        return load_contract(source)
    if setting == "on" or (setting == "auto" and source is not None and has_template):
        return PromptContract(use_chat_template=True, system=system or None)
    return RAW


def attach(tokenizer, contract: PromptContract):
    """Give ``tokenizer`` its checkpoint's contract (``load_model`` does; the base stage after deciding)."""
    setattr(tokenizer, _ATTR, contract)
    return tokenizer


def contract_of(tokenizer_or_path) -> PromptContract:
    """The contract attached to a tokenizer, or saved in a model folder; the raw text when there is none."""
    if isinstance(tokenizer_or_path, (str, Path)):
        return load_contract(tokenizer_or_path)
    return getattr(tokenizer_or_path, _ATTR, RAW)


def save_contract(contract: PromptContract, folder: str | Path) -> Path:
    """Write ``prompt_contract.json`` into ``folder`` (aside, then renamed)."""
    path = Path(folder) / CONTRACT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(contract.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_contract(folder: str | Path) -> PromptContract:
    """The contract saved in a model folder; the raw text when the folder has none (or is a hub name)."""
    path = Path(folder) / CONTRACT_FILE
    if not path.is_file():
        return RAW
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return PromptContract.from_dict(data, where=str(path))


def split_answer(prompt_text: str) -> tuple[str, str]:
    """``(request, answer so far)``: a prompt that continues past the task prompt's ``Plan:`` line (an
    SRL step prompt: the expert's steps 1..k-1 and maybe step k's title) has begun the answer already.

    >>> split_answer("Task: t\\nLore:\\n\\nPlan:\\n1. **A** a\\n")
    ('Task: t\\nLore:\\n\\nPlan:\\n', '1. **A** a\\n')
    >>> split_answer("Describe a tree.")
    ('Describe a tree.', '')
    """
    # The last marker: lore passages come before it, and step lines ("N. **Title** ...") never equal it.
    cut = prompt_text.rfind(ANSWER_MARKER)
    if cut < 0:
        return prompt_text, ""
    cut += len(ANSWER_MARKER)
    return prompt_text[:cut], prompt_text[cut:]


def _messages(request: str, contract: PromptContract) -> list[dict[str, str]]:
    system = [{"role": "system", "content": contract.system}] if contract.system else []
    return [*system, {"role": "user", "content": request}]


def _template(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the prompt contract uses the chat template, but the tokenizer has none")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos):]  # the tokenizer adds it on encoding: keep one BOS, not two
    return text


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def render_prompt(tokenizer, prompt_text: str, contract: PromptContract | None = None) -> str:
    """The text to tokenize for ``prompt_text`` (``contract`` defaults to the tokenizer's own).

    Off: ``prompt_text`` unchanged. On: the chat template over the system turn and the request as the
    user turn, ending with the generation prompt, so the model's next token starts its answer; an
    answer the prompt has begun (``split_answer``) follows the generation prompt.
    """
    contract = contract_of(tokenizer) if contract is None else contract
    if not contract.use_chat_template:
        return prompt_text
    request, started = split_answer(prompt_text)
    return _template(tokenizer, _messages(request, contract), add_generation_prompt=True) + started


def render_example(tokenizer, prompt: str, completion: str,
                   contract: PromptContract | None = None) -> tuple[str, str]:
    """A supervised row as ``(prompt, completion)`` text for TRL's prompt-completion format.

    Off: unchanged (TRL appends the EOS token to the completion). On: the prompt as ``render_prompt``
    writes it, and the completion as the rest of the template's rendering of the whole conversation
    (the answer and the template's end-of-turn), cut after its last EOS token: generation stops there,
    and a completion that ends with EOS gets no second one from TRL.
    """
    contract = contract_of(tokenizer) if contract is None else contract
    if not contract.use_chat_template:
        return prompt, completion
    head = render_prompt(tokenizer, prompt, contract)
    request, started = split_answer(prompt)
    messages = [*_messages(request, contract), {"role": "assistant", "content": started + completion}]
    full = _template(tokenizer, messages, add_generation_prompt=False)
    if not full.startswith(head):
        raise ValueError("the chat template renders the prompt differently alone than followed by an answer; "
                         f"prompt {head[-80:]!r} is not a prefix of {full[:len(head) + 40][-120:]!r}")
    tail = full[len(head):]
    eos = tokenizer.eos_token
    if eos and eos in tail:
        tail = tail[:tail.rindex(eos) + len(eos)]
    return head, tail
