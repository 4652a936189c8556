"""One prompt contract for training, evaluation and serving (srl_assets/prompt_contract.py).

Both paths on tiny models: with the contract off (the tiny default) the model sees exactly the tokens
of ``task_prompt``; with it on (the tiny tokenizer's own chat template) ``generate``, the base stage's
SFT rows, RFT's fine-tuning rows and the GRPO dataset all see the template's tokens; the contract is
written into the checkpoint and inherited by the next stage.
"""

import copy
import doctest
import json

import pytest
from tokenizers.processors import TemplateProcessing

from srl_assets import prompt_contract
from srl_assets.collaboration.teacher_planner import make_teacher
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.models import sft as sft_module
from srl_assets.models import tiny
from srl_assets.models.sft import sft_rows
from srl_assets.models.tiny import (TinyModelConfig, build_tiny_model, generate, load_model, save_model,
                                    train_bpe_tokenizer)
from srl_assets.paid.datasets import SYSTEM_PROMPT, reinforcement_items, sft_examples
from srl_assets.prompt_contract import (ANSWER_MARKER, CONTRACT_FILE, DEFAULT_SYSTEM, RAW, PromptContract, attach,
                                        contract_of, decide, load_contract, render_example, render_prompt, split_answer)
from srl_assets.prompts import step_prompt, task_prompt
from srl_assets.rlvr import rlvr_trainer
from srl_assets.rlvr.verifier_reward import task_column
from srl_assets.rules_integration import RulesIntegration
from srl_assets.training.stages import run_stage, write_rows

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64}
CHAT = PromptContract(use_chat_template=True, system="Be brief.")
PROMPT = task_prompt("Grow a fern by a pond", "Ferns like shade.")


@pytest.fixture(scope="module")
def plant():
    rules = RulesIntegration().load("plant")
    domain = get_domain("plant")
    tasks = DynamicExampleGenerator(domain, rules).generate(4, "train", 7)
    teacher = make_teacher("procedural", domain, rules)
    return [(task, teacher.plan(task, [])) for task in tasks]


@pytest.fixture(scope="module")
def tokenizer(plant):
    corpus = [task_prompt(t.prompt, "") + traj for t, traj in plant] + [PROMPT]
    return train_bpe_tokenizer(corpus * 4, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model(tokenizer, TinyModelConfig(vocab_size=len(tokenizer), **TINY), seed=0)


def _chat(tokenizer, contract=CHAT):
    return attach(copy.deepcopy(tokenizer), contract)


def _template_ids(tokenizer, text, system="Be brief."):
    messages = [{"role": "system", "content": system}] if system else []
    out = tokenizer.apply_chat_template([*messages, {"role": "user", "content": text}], tokenize=True,
                                        add_generation_prompt=True, return_dict=True)
    return list(out["input_ids"])


@pytest.fixture
def seen(monkeypatch):
    """The prompt token ids generate() hands to the sampler (which then runs as usual)."""
    batches = []
    real = tiny.pick_sampler

    def recording(model, name=None):
        sample = real(model, name)

        def run(model, input_ids, attention_mask, **kwargs):
            batches.extend(ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask))
            return sample(model, input_ids, attention_mask, **kwargs)
        return run

    monkeypatch.setattr(tiny, "pick_sampler", recording)
    return batches


def test_doctests():
    assert doctest.testmod(prompt_contract).failed == 0


def test_off_generates_from_the_raw_prompt_tokens(model, tokenizer, seen):
    assert contract_of(tokenizer) == RAW  # a tokenizer nothing was attached to: the raw text
    generate(model, tokenizer, [PROMPT], max_new_tokens=2)
    assert seen == [tokenizer(PROMPT)["input_ids"]]
    assert render_prompt(tokenizer, PROMPT) == PROMPT
    assert render_example(tokenizer, PROMPT, "1. **A** a") == (PROMPT, "1. **A** a")


def test_on_generates_through_the_chat_template(model, tokenizer, seen):
    chat = _chat(tokenizer)
    generate(model, chat, [PROMPT, "short"], max_new_tokens=2)
    assert seen == [_template_ids(tokenizer, PROMPT), _template_ids(tokenizer, "short")]
    assert seen[0].count(tokenizer.bos_token_id) == 1
    seen.clear()
    generate(model, chat, [PROMPT], max_new_tokens=2, contract=RAW)  # text already rendered: left as it is
    assert seen == [tokenizer(PROMPT)["input_ids"]]


def test_a_step_prompt_continues_the_answer_after_the_generation_prompt(tokenizer):
    """An SRL step prompt holds the expert's first steps: under the template they are the answer's start."""
    chat = _chat(tokenizer)
    assert PROMPT.endswith(ANSWER_MARKER)  # task_prompt ends where the answer starts
    step = step_prompt("Grow a fern by a pond", "Ferns like shade.", ["1. **A** a"], "B")
    assert split_answer(step) == (PROMPT, "1. **A** a\n2. **B**")
    assert render_prompt(chat, step) == render_prompt(chat, PROMPT) + "1. **A** a\n2. **B**"
    prompt, completion = render_example(chat, step, " b")
    assert prompt == render_prompt(chat, step) and completion == " b" + tokenizer.eos_token


def test_sft_rows_follow_the_contract(tokenizer):
    examples = [{"prompt": PROMPT, "completion": "1. **Climate** use 300 mm."}]
    assert sft_rows(tokenizer, examples) == examples
    [row] = sft_rows(_chat(tokenizer), examples)
    full = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": PROMPT},
                                          {"role": "assistant", "content": examples[0]["completion"]}], tokenize=False)
    # The template's turn ends "<|eos|>\n": the row stops at EOS, where generation stops (TRL adds no second).
    assert row["prompt"] + row["completion"] == full.removesuffix("\n")
    assert row["completion"] == examples[0]["completion"] + tokenizer.eos_token
    assert tokenizer(row["prompt"])["input_ids"] == _template_ids(tokenizer, PROMPT)


def test_a_tokenizer_that_adds_bos_itself_gets_one_bos(tokenizer):
    """Llama 3-style tokenizers add BOS on encoding and their template writes it too: keep one."""
    adds_bos = _chat(tokenizer)
    adds_bos._tokenizer.post_processor = TemplateProcessing(single="<|bos|> $A",
                                                            special_tokens=[("<|bos|>", tokenizer.bos_token_id)])
    assert adds_bos("x")["input_ids"][0] == tokenizer.bos_token_id
    rendered = render_prompt(adds_bos, PROMPT)
    assert not rendered.startswith(tokenizer.bos_token)
    assert adds_bos(rendered)["input_ids"] == _template_ids(tokenizer, PROMPT)


def test_the_contract_survives_save_and_load(tmp_path, model, tokenizer):
    for name, contract in [("on", CHAT), ("off", RAW)]:
        out = save_model(model, _chat(tokenizer, contract), tmp_path / name)
        assert json.loads((out / CONTRACT_FILE).read_text()) == contract.to_dict()
        _, loaded = load_model(out, device="cpu")
        assert contract_of(loaded) == contract == contract_of(out)
    (tmp_path / "on" / CONTRACT_FILE).unlink()  # a checkpoint from before the contract: raw text
    assert load_contract(tmp_path / "on") == RAW


@pytest.mark.parametrize("content,error", [
    ('{"use_chat_template": true, "sytem": "x"}', "unknown keys \\['sytem'\\]"),  # case: a misspelt key
    ('{"use_chat_template": "yes"}', "use_chat_template must be true or false"),  # case: not a boolean
    ("{not json", "not valid JSON"),                                              # case: a broken file
])
def test_a_bad_contract_file_is_refused_naming_it(tmp_path, content, error):
    (tmp_path / CONTRACT_FILE).write_text(content)
    with pytest.raises(ValueError, match=error) as err:
        load_contract(tmp_path)
    assert CONTRACT_FILE in str(err.value)


@pytest.mark.parametrize("setting,source,expected", [
    ("auto", None, RAW),                           # case: the tiny default keeps the raw text
    ("off", None, RAW),
    ("on", None, PromptContract(True, DEFAULT_SYSTEM)),
    ("auto", "some/instruct-model", PromptContract(True, DEFAULT_SYSTEM)),  # case: pretrained with a template
    ("off", "some/instruct-model", RAW),
])
def test_the_base_stage_setting_decides_the_contract(tokenizer, setting, source, expected):
    assert decide(setting, tokenizer, source) == expected


def test_auto_keeps_the_contract_of_a_checkpoint_it_starts_from(tmp_path, model, tokenizer):
    save_model(model, tokenizer, tmp_path)  # a raw-text checkpoint whose tokenizer ships a template
    assert decide("auto", tokenizer, str(tmp_path)) == RAW


@pytest.mark.parametrize("setting", ["maybe", True, "ON"])  # True: YAML reads a bare `on` as a boolean
def test_a_bad_setting_raises_naming_it(tokenizer, setting):
    with pytest.raises(ValueError, match=f"chat_template must be one of auto, on, off; got {setting!r}"):
        decide(setting, tokenizer, None)


def test_on_without_a_chat_template_raises(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="chat_template: on, but the tokenizer of org/base has no chat template"):
        decide("on", bare, "org/base")


def test_hosted_models_get_the_messages_a_local_instruct_checkpoint_renders(plant, tokenizer):
    """Paid datasets: the user turn is task_prompt's raw text and the system turn the contract's, so the
    local chat template over the hosted record's messages gives exactly the local rendering."""
    from srl_assets.collaboration.verifier import Verifier
    from srl_assets.paid.base import DatasetSource
    from srl_assets.paid.openai_provider import OpenAIFineTuner

    assert SYSTEM_PROMPT == DEFAULT_SYSTEM
    verifier = Verifier(get_domain("plant"), RulesIntegration().load("plant"))
    tasks = {t.task_id: t for t, _ in plant}
    rows = [{"task_id": t.task_id, "prompt": t.prompt, "lore": "Ferns like shade.\nMoss too.", "trajectory": traj}
            for t, traj in plant]
    examples, _ = sft_examples(rows, tasks, verifier, lore_k=1)
    source = DatasetSource("plant", sft=tuple(examples), reinforcement=tuple(reinforcement_items(rows, tasks, 1)))
    local = _chat(tokenizer, PromptContract(True, DEFAULT_SYSTEM))
    for method in ("supervised", "reinforcement"):
        records = OpenAIFineTuner().prepare_dataset(method, source, base_model="gpt-4.1-mini")
        assert len(records) == len(plant)
        for (task, _), record in zip(plant, records):
            request = [m for m in record["messages"] if m["role"] != "assistant"]
            raw = task_prompt(task.prompt, "Ferns like shade.")
            assert request[-1]["content"] == raw
            assert tokenizer.apply_chat_template(request, tokenize=False, add_generation_prompt=True) \
                == render_prompt(local, raw)


def _spec(tmp, stage, rows, config, model_path=None):
    work = tmp / stage
    work.mkdir(parents=True)
    write_rows(work / "input.jsonl", rows)
    return {"stage": stage, "model_type": "plant", "rules_dir": None, "work_dir": str(work / "work"),
            "out_dir": str(work / "out"), "data": str(work / "input.jsonl"), "config": config,
            "model_path": model_path, "report_to": []}


def test_on_path_end_to_end_base_sft_then_rft_inherits_it(tmp_path, plant, monkeypatch):
    """The base stage decides the contract, trains on template rows and writes it; the RFT stage reads it
    from the checkpoint, samples and fine-tunes through the template, and passes it on."""
    datasets = []

    class RecordingSFT(sft_module.FullLogitsSFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            datasets.append((self.processing_class, self.train_dataset))

    monkeypatch.setattr(sft_module, "FullLogitsSFTTrainer", RecordingSFT)
    prompts = [task_prompt(t.prompt, "") for t, _ in plant]
    rows = [{"kind": "corpus", "text": p + traj} for p, (_, traj) in zip(prompts, plant)]
    rows += [{"kind": "sft", "prompt": p, "completion": traj} for p, (_, traj) in zip(prompts, plant)]
    base = _spec(tmp_path, "base", rows, {"vocab_size": 300, "tiny": TINY, "sft_steps": 1, "sft_batch_size": 2,
                                          "chat_template": "on"})
    assert run_stage(base, lambda e: None)["prompt_contract"] == {"use_chat_template": True, "system": DEFAULT_SYSTEM}
    assert contract_of(base["out_dir"]) == PromptContract(True, DEFAULT_SYSTEM)

    rft = _spec(tmp_path, "rlvr", [{"prompt": p, "task": task_column(t), "role": "train"}
                                   for p, (t, _) in zip(prompts, plant)],
                {"algorithm": "rft", "prompts_per_round": 2, "samples_per_prompt": 1, "max_new_tokens": 8,
                 "min_score": 0.0, "sft_steps": 1, "batch_size": 2, "learning_rate": 1e-3},
                model_path=base["out_dir"])
    run_stage(rft, lambda e: None)
    assert contract_of(rft["out_dir"]) == PromptContract(True, DEFAULT_SYSTEM)  # inherited

    assert len(datasets) == 2  # the base warm start, then RFT's round
    for tokenizer, dataset in datasets:
        for row in dataset:
            # Each row's prompt tokens are the template's, and the loss starts right after them.
            head = _template_ids(tokenizer, next(p for p in prompts if p in tokenizer.decode(row["input_ids"])),
                                 system=DEFAULT_SYSTEM)
            assert row["input_ids"][:len(head)] == head
            assert next(i for i, label in enumerate(row["labels"]) if label != -100) == len(head)
            assert row["input_ids"][-1] == tokenizer.eos_token_id


def test_grpo_datasets_get_rendered_prompts(tmp_path, model, tokenizer, monkeypatch):
    """TRL's GRPOTrainer tokenizes the prompt column as it is: RLVR's GRPO builds it rendered."""
    built = {}

    class Stop(Exception):
        pass

    def capture(**kwargs):
        built.update(kwargs)
        raise Stop

    monkeypatch.setattr(rlvr_trainer, "FastRolloutGRPOTrainer", capture)
    save_model(model, _chat(tokenizer), tmp_path / "start")
    inputs = rlvr_trainer.RLVRInputs(model_path=str(tmp_path / "start"), rows=[{"prompt": PROMPT, "task": "{}"}],
                                     verifier=None, work_dir=tmp_path / "w", out_dir=tmp_path / "o", report_to=[])
    with pytest.raises(Stop):
        rlvr_trainer.RLVRTrainer("grpo", {"max_steps": 1, "prompts_per_step": 1, "num_generations": 2}).train(inputs)
    [row] = list(built["train_dataset"])
    assert row == {"prompt": render_prompt(_chat(tokenizer), PROMPT), "task": "{}"}
    assert built["processing_class"](row["prompt"])["input_ids"] == _template_ids(tokenizer, PROMPT)
