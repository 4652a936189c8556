"""The embedded default policy: a byte-level BPE tokenizer and a tiny Llama, plus loading of any HF causal LM.

Everything here works offline. The tokenizer is trained on the domain corpus (trajectories and prompts),
so a 1k vocabulary covers the content well; the model is a ``LlamaForCausalLM`` of about a million
parameters that a 2-core CPU trains in minutes. ``load_model`` uses only the ``Auto*`` classes, so a
checkpoint written by ``save_model`` and any Hugging Face causal LM path or name load the same way.

>>> tok = train_bpe_tokenizer(["1. **Climate** use 300 to 1200 mm."] * 4, vocab_size=300)
>>> tok.decode(tok("<think>ok</think>1. **Climate**")["input_ids"], skip_special_tokens=True)
'<think>ok</think>1. **Climate**'
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from srl_assets.models.sampler import pick_sampler
from srl_assets.prompt_contract import PromptContract, attach, contract_of, load_contract, render_prompt, save_contract
from srl_assets.prompts import THINK_CLOSE, THINK_OPEN
from srl_assets.training.processes import is_main_process

log = logging.getLogger(__name__)

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLES = ("system", "user", "assistant")
ROLE_TOKENS = tuple(f"<|{role}|>" for role in ROLES)

# One message is `<|role|>\ncontent<|eos|>\n`; the assistant's turn sits in {% generation %} so that TRL's
# `assistant_only_loss` can mask everything else. Written on one line with explicit "\n" because
# transformers renders chat templates with trim_blocks/lstrip_blocks on.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role'] + '; use system, user or assistant') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ message['content'] + eos_token + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def train_bpe_tokenizer(corpus: list[str], vocab_size: int = 1024,
                        model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` (offline) and wrap it for transformers/TRL.

    Byte-level pre-tokenizer and decoder make every string round-trip exactly (JSON, digits, runs of
    spaces, newlines). ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` and the role markers are special tokens;
    ``<think>`` and ``</think>`` are *normal* added tokens, so ``decode(skip_special_tokens=True)``
    keeps them (the step reward reads the text after ``</think>``). No token is added automatically
    on encoding: prompt and prompt+completion tokenize as prefixes of each other, which TRL relies on.
    ``len(tokenizer) == vocab_size`` unless the corpus is too small to learn that many merges.
    """
    specials = [BOS, EOS, PAD, *ROLE_TOKENS]
    thinking = [THINK_OPEN, THINK_CLOSE]
    min_size = len(pre_tokenizers.ByteLevel.alphabet()) + len(specials) + len(thinking)
    if vocab_size < min_size:
        raise ValueError(f"vocab_size {vocab_size} is below the {min_size} byte and special tokens")
    if not any(text for text in corpus):
        raise ValueError("the tokenizer corpus is empty")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(thinking),  # the two thinking tags are added after training
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown token
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in thinking])

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",  # decoder-only generation: new tokens follow the prompt directly
        truncation_side="left",
        clean_up_tokenization_spaces=False,  # " ." must stay " ." for exact round-trips
        model_max_length=model_max_length,
        chat_template=CHAT_TEMPLATE,
    )


@dataclass
class TinyModelConfig:
    """Shape of the embedded tiny Llama. The defaults give about 0.8M parameters with a 1k vocabulary."""

    vocab_size: int = field(default=1024, metadata={"help": (
        "Rows of the embedding matrix; must be at least len(tokenizer). Also the size the BPE tokenizer is "
        "trained to. A small vocabulary keeps the tied embedding (vocab x hidden) from dominating the model.")})
    hidden_size: int = field(default=128, metadata={"help": (
        "Width of the residual stream. Cost per token grows with its square; 128 is enough to copy "
        "lore-derived numbers into a fixed trajectory format.")})
    num_hidden_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Query heads; must divide hidden_size."})
    num_key_value_heads: int = field(default=4, metadata={"help": (
        "Key/value heads (grouped-query attention when below num_attention_heads); must divide it. Equal "
        "to the query heads here: at this size the KV cache is negligible.")})
    intermediate_size: int = field(default=256, metadata={"help": "Width of the SwiGLU feed-forward layer."})
    max_position_embeddings: int = field(default=1024, metadata={"help": (
        "Longest sequence (prompt + completion) the model is trained for. A plant trajectory with its "
        "prompt is about 250 tokens with a 1k vocabulary.")})
    tie_word_embeddings: bool = field(default=True, metadata={"help": (
        "Share the input embedding and the output head: halves the vocabulary's parameter cost.")})
    rope_theta: float = field(default=10_000.0, metadata={"help": "RoPE base; 1e4 suits ~1k positions."})
    initializer_range: float = field(default=0.02, metadata={"help": "Std of the normal weight init."})

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} must divide "
                             f"hidden_size {self.hidden_size}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads {self.num_key_value_heads} must divide "
                             f"num_attention_heads {self.num_attention_heads}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
                     "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, cfg: TinyModelConfig | None = None,
                     seed: int | None = None) -> LlamaForCausalLM:
    """A freshly initialised ``LlamaForCausalLM`` sized by ``cfg`` whose special ids match ``tokenizer``."""
    cfg = cfg or TinyModelConfig()
    if len(tokenizer) > cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but vocab_size is {cfg.vocab_size}")
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        initializer_range=cfg.initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if seed is not None:
        torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    _sync_generation_config(model, tokenizer)
    log.info("tiny Llama: %s parameters (%s)", format_param_count(count_parameters(model)), cfg)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding and head count once)."""
    return sum(p.numel() for p in model.parameters())


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """Write a ``save_pretrained`` folder (safetensors weights, config, tokenizer with chat template)
    and the tokenizer's prompt contract (``prompt_contract.json``: raw text or chat template).

    Under a multi-process launch only the main process writes (the others hold the same weights).
    """
    out = Path(out_dir)
    if not is_main_process():
        return out
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    save_contract(contract_of(tokenizer), out)
    return out


def load_model(path_or_name: str | Path, device: str | None = None,
               dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load any causal LM (a local folder or a hub name) through ``AutoModelForCausalLM``/``AutoTokenizer``.

    ``device``/``dtype`` default to ``pick_device()``. The tokenizer is made ready for batched
    generation: a pad token (the EOS token when the model has none) and left padding. The folder's
    prompt contract is attached to the tokenizer (raw text when it has none, e.g. a hub name).
    """
    if device is None:
        device, picked_dtype = pick_device()
        dtype = dtype or picked_dtype
    elif dtype is None:  # an explicit device: bf16 only on a GPU that supports it
        dtype = torch.bfloat16 if str(device).startswith("cuda") and torch.cuda.is_bf16_supported() \
            else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(str(path_or_name))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{path_or_name}: tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    attach(tokenizer, load_contract(path_or_name))
    model = AutoModelForCausalLM.from_pretrained(str(path_or_name), dtype=dtype).to(device)
    _sync_generation_config(model, tokenizer)
    return model, tokenizer



def model_from_source(source: dict[str, Any], corpus: list[str],
                      seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A starting model from a model-source config (``ModelSourceConfig``'s fields: ``model_name_or_path``,
    ``vocab_size``, ``tiny``): the pretrained model it names, else the tiny Llama built offline, a BPE
    vocabulary trained on ``corpus`` and weights initialised from ``seed``. Seeded, so the same config gives
    the same start: an unseeded initialisation once moved a recipe comparison's start from 0.485 to 0.225
    between two runs of one config."""
    if source.get("model_name_or_path"):
        return load_model(source["model_name_or_path"])
    tokenizer = train_bpe_tokenizer(corpus, vocab_size=int(source.get("vocab_size", 1024)))
    model = build_tiny_model(tokenizer, TinyModelConfig(vocab_size=len(tokenizer), **source.get("tiny", {})),
                             seed=seed)
    return model, tokenizer

def pick_device() -> tuple[str, torch.dtype]:
    """CUDA with bf16 when a GPU is present (float32 on GPUs without bf16), else CPU with float32."""
    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return "cpu", torch.float32


@torch.inference_mode()
def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
             max_new_tokens: int = 256, temperature: float = 0.0, batch_size: int = 16,
             top_p: float = 1.0, seed: int | None = None, add_special_tokens: bool = True,
             sampler: str | None = None, contract: PromptContract | None = None) -> list[str]:
    """Complete each prompt; returns only the new text, one string per prompt, in order.

    ``sampler``: ``auto`` (default, or $SRL_SAMPLER), ``fast`` or ``hf``; see ``models.sampler``.

    ``temperature == 0`` is greedy decoding; above 0, plain sampling at that temperature (top-k off,
    nucleus ``top_p``). Prompts are raw text (``prompts.task_prompt``): they are rendered by the
    checkpoint's prompt contract (``contract``, default the tokenizer's own: the chat template for an
    instruct model, the text unchanged for the tiny default); pass ``contract=RAW`` for text that is
    already rendered.
    Decoding drops special tokens (EOS, padding) but keeps ``<think>``/``</think>``.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if seed is not None:
        torch.manual_seed(seed)
    if tokenizer.padding_side != "left":
        raise ValueError("generation needs a left-padding tokenizer (load_model sets it)")
    # The lean sampler (srl_assets/models/sampler.py) for Llama-shaped models, else HF generate;
    # `sampler="hf"` or SRL_SAMPLER=hf picks HF generate. Both draw on the RNG seeded above.
    sample = pick_sampler(model, sampler)
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [render_prompt(tokenizer, p, contract) for p in prompts[start:start + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True,
                              add_special_tokens=add_special_tokens).to(model.device)
            new = sample(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         temperature=temperature, top_p=top_p)
            outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True,
                                                  clean_up_tokenization_spaces=False))
    finally:
        model.train(was_training)
    return outputs


def _sync_generation_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make generation stop on the tokenizer's EOS and pad with its pad token."""
    gen = model.generation_config
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    if model.config.pad_token_id is None and hasattr(model.config, "pad_token_id"):
        model.config.pad_token_id = tokenizer.pad_token_id


def format_param_count(n: int) -> str:
    """``1234567 -> '1.23M'`` for logs and metadata."""
    if n <= 0:
        return "0"
    exponent = min(int(math.log10(n)) // 3, 3)
    return f"{n / 10 ** (3 * exponent):.3g}{['', 'K', 'M', 'B'][exponent]}"
