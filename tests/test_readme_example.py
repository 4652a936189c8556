"""The README's "Use a trained model" example is examples/use_trained_model.py, word for word, and
it runs: on a tiny checkpoint built here it loads, prompts, parses and verifies; the expert's own
trajectory passes its verification; params outside the rules are refused with the field named."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains import get_domain
from srl_assets.domains.base import ParamsError
from srl_assets.models.tiny import TinyModelConfig, build_tiny_model, save_model, train_bpe_tokenizer
from srl_assets.rules_integration import RulesIntegration
from srl_assets.trajectory import render_trajectory

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "use_trained_model.py"
PARAMS = {"family": "rosaceae", "biome": "grassland", "growth_form": "shrub", "ask_flowering": True}


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("use_trained_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plant():
    return get_domain("plant"), RulesIntegration().load("plant")


def test_readme_shows_the_example_file_verbatim():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- examples/use_trained_model\.py -->\n```python\n(.*?)```\n", readme, re.S)
    assert len(blocks) == 1, "README needs exactly one example block after its marker comment"
    assert blocks[0] == EXAMPLE.read_text()


def test_links_in_the_readme_and_docs_stay_inside_the_repository():
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for target in re.findall(r"\]\(([^)#]+)", doc.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path = (doc.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name} links to {target}"


def test_the_expert_trajectory_passes_and_its_spec_is_read_back(example, plant):
    domain, rules = plant
    task = example.make_task("plant", PARAMS, rules)
    plan = domain.plan(task.params, rules)
    result = example.read_spec(task, render_trajectory(plan.steps, plan.spec), Verifier(domain, rules))
    assert result["passed"] and result["score"] == 1.0 and result["spec"] == plan.spec and result["error"] is None


@pytest.mark.parametrize("params, field", [
    ({**PARAMS, "biome": "tundra"}, "biome"),           # rosaceae does not grow in the tundra
    ({k: v for k, v in PARAMS.items() if k != "family"}, "family"),  # a required key missing
    ({**PARAMS, "colour": "red"}, "colour"),              # a key the rules do not know
])
def test_params_outside_the_rules_are_refused(example, plant, params, field):
    with pytest.raises(ParamsError) as raised:
        example.make_task("plant", params, plant[1])
    assert raised.value.field == field


def test_the_example_runs_on_a_tiny_checkpoint(example, plant, tmp_path, capsys):
    domain, rules = plant
    plan = domain.plan(PARAMS, rules)
    tokenizer = train_bpe_tokenizer([domain.describe(PARAMS, rules), render_trajectory(plan.steps, plan.spec)],
                                    vocab_size=300)
    model = build_tiny_model(tokenizer, TinyModelConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                                        num_attention_heads=2, num_key_value_heads=2,
                                                        intermediate_size=64, max_position_embeddings=512))
    save_model(model, tokenizer, tmp_path / "ckpt")
    result = example.main([str(tmp_path / "ckpt"), "plant", json.dumps(PARAMS)])
    printed = json.loads(capsys.readouterr().out)
    # An untrained model writes no valid trajectory: the verdict says so instead of raising.
    assert printed["task"] == domain.describe(PARAMS, rules) and isinstance(printed["output"], str)
    assert result["passed"] is False and result["spec"] is None and result["error"]
    assert result["failures"][0]["skill"] == "format"
    assert printed["passed"] is False
