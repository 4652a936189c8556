"""Malformed rules files fail with an error that names the file and the field."""

import shutil
from pathlib import Path

import pytest
import yaml

from srl_assets.domains.base import RulesError
from srl_assets.rules_integration import RULES_DIR, RulesIntegration


def _copy_rules(tmp_path: Path, model_type: str) -> Path:
    for suffix in (".yaml", ".md"):
        shutil.copy(RULES_DIR / f"{model_type}{suffix}", tmp_path / f"{model_type}{suffix}")
    return tmp_path / f"{model_type}.yaml"


def _edit(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


CASES = [
    # (case, edit of the parsed YAML, field named in the error)
    ("missing version", lambda d: d.pop("version"), "version"),
    ("version not semver", lambda d: d.update(version="one"), "version"),
    ("wrong model type", lambda d: d.update(model_type="tree"), "model_type"),
    ("missing data section", lambda d: d.pop("data"), "data"),
    ("range out of bounds", lambda d: d["data"]["soils"]["peat"].update(ph=[3.5, 15]), "data.soils.peat.ph[1]"),
    ("min above max", lambda d: d["data"]["growth_forms"]["herb"].update(height_m=[2.0, 1.0]), "data.growth_forms.herb.height_m"),
    ("unknown biome reference", lambda d: d["data"]["families"]["cactaceae"].update(biomes=["desert", "moon"]), "data.families.cactaceae.biomes[1]"),
    ("unknown enum value", lambda d: d["data"]["families"]["rosaceae"].update(edibility="tasty"), "data.families.rosaceae.edibility"),
    ("wrong type", lambda d: d["data"]["rarity_tiers"]["rare"].update(spawn_weight="low"), "data.rarity_tiers.rare.spawn_weight"),
    ("missing field", lambda d: d["data"]["biomes"]["tundra"].pop("rainfall_mm"), "data.biomes.tundra.rainfall_mm"),
    ("unknown soil reference", lambda d: d["data"]["biomes"]["desert"].update(soils=["lava"]), "data.biomes.desert.soils[0]"),
]


@pytest.mark.parametrize("case,edit,field", CASES, ids=[c[0] for c in CASES])
def test_malformed_rules_name_file_and_field(tmp_path, case, edit, field):
    path = _copy_rules(tmp_path, "plant")
    _edit(path, edit)
    with pytest.raises(RulesError) as info:
        RulesIntegration(tmp_path).load("plant")
    assert info.value.file == str(path)
    assert info.value.field == field
    assert str(path) in str(info.value) and field in str(info.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = _copy_rules(tmp_path, "plant")
    path.write_text("model_type: plant\nversion: [1.0.0\n")
    with pytest.raises(RulesError) as info:
        RulesIntegration(tmp_path).load("plant")
    assert info.value.file == str(path) and info.value.field.startswith("line ")


def test_bad_lore_heading_names_lore_file(tmp_path):
    _copy_rules(tmp_path, "plant")
    lore = tmp_path / "plant.md"
    lore.write_text(lore.read_text() + "\n## tree.oak: Wrong prefix\nOaks.\n")
    with pytest.raises(RulesError) as info:
        RulesIntegration(tmp_path).load("plant")
    assert info.value.file == str(lore) and info.value.field == "tree.oak"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(RulesError, match="plant.yaml"):
        RulesIntegration(tmp_path).load("plant")


def test_version_changes_with_content(tmp_path):
    path = _copy_rules(tmp_path, "plant")
    before = RulesIntegration(tmp_path).load("plant")
    assert before.version.startswith(f"{before.semver}+")
    _edit(path, lambda d: d["data"]["soils"]["peat"].update(ph=[3.6, 5.5]))
    after = RulesIntegration(tmp_path).load("plant")
    assert after.semver == before.semver and after.version != before.version
