"""The README's walkthrough "Add a model type", followed step by step for an eighth, minimal domain
(`lantern`): one domain module (here, the class below), one rules file pair (written to a folder),
one registry line; then its data assets materialize over eight partitions and their checks pass."""

import copy
import random
from typing import Any

import dagster as dg
import pytest

from resources.duckdb_store import DuckDBStore
from resources.rules import RulesResource
from resources.teacher import TeacherResource
from resources.training import TrainingResource
from srl_assets import domains
from srl_assets.assets.rules_asset import rules
from srl_assets.assets.srl_steps import srl_steps
from srl_assets.assets.task_examples import task_examples
from srl_assets.assets.trajectories import trajectories
from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains.base import Domain, Failure, ParamsChecker, Plan, Rules, RulesValidator
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.rules_integration import RulesIntegration
from srl_assets.trajectory import render_trajectory

# -- step 1: the domain module ---------------------------------------------------------------


class LanternDomain(Domain):
    name = "lantern"
    skills = {
        "fuel_hours": "burn time lies inside the fuel's range and meets the task's minimum",
        "flame_colour": "the flame colour is the one the fuel's lore gives",
    }
    spec_shape = {"name": str, "fuel": str, "housing": str, "burn_hours": float, "flame_colour": str}

    def validate_rules(self, v: RulesValidator) -> None:
        v.strings("data.housings")
        for fuel in v.mapping("data.fuels"):
            v.number_range(f"data.fuels.{fuel}.burn_hours", lo=0, hi=1000)
            v.string(f"data.fuels.{fuel}.colour")

    def sample_params(self, rng: random.Random, rules: Rules) -> dict[str, Any]:
        params = {"fuel": rng.choice(sorted(rules.data["fuels"])), "housing": rng.choice(rules.data["housings"]),
                  "ask_colour": rng.random() < 0.7}
        if rng.random() < 0.6:
            lo, hi = rules.data["fuels"][params["fuel"]]["burn_hours"]
            params["min_hours"] = round(lo + (hi - lo) * rng.choice([0.2, 0.4, 0.6, 0.8]), 1)
        return params

    def validate_params(self, params: Any, rules: Rules) -> None:
        c = ParamsChecker(params)
        c.keys({"fuel", "housing", "ask_colour"}, {"min_hours"})
        fuel = c.choice("fuel", rules.data["fuels"], "fuel")
        c.choice("housing", rules.data["housings"], "housing")
        c.boolean("ask_colour")
        c.number("min_hours", *rules.data["fuels"][fuel]["burn_hours"])

    def task_skills(self, params: dict[str, Any], rules: Rules) -> list[str]:
        return ["fuel_hours", "flame_colour"] if params["ask_colour"] else ["fuel_hours"]

    def describe(self, params: dict[str, Any], rules: Rules) -> str:
        text = f"Design a {params['housing']} lantern burning {params['fuel']}. Give its burn time"
        text += " and flame colour." if params["ask_colour"] else "."
        if "min_hours" in params:
            text += f" It burns at least {params['min_hours']} hours."
        return text

    def plan(self, params: dict[str, Any], rules: Rules) -> Plan:
        fuel = rules.data["fuels"][params["fuel"]]
        lo, hi = fuel["burn_hours"]
        hours = max(round((lo + hi) / 2, 1), params.get("min_hours", lo))
        steps = [("Fuel", f"{params['fuel'].capitalize()} burns {lo} to {hi} hours; use {hours}."),
                 ("Colour", f"{params['fuel'].capitalize()} burns {fuel['colour']}.")]
        spec = {"name": f"{params['housing']} {params['fuel']} lantern", "fuel": params["fuel"],
                "housing": params["housing"], "burn_hours": hours, "flame_colour": fuel["colour"]}
        return Plan(steps, spec)

    def check(self, params: dict[str, Any], spec: dict[str, Any], rules: Rules) -> list[Failure]:
        fuel = rules.data["fuels"][params["fuel"]]
        failures = []
        if spec["fuel"] != params["fuel"]:
            failures.append(Failure("fuel_hours", f"fuel is {spec['fuel']!r}, task asks {params['fuel']!r}"))
        elif not fuel["burn_hours"][0] <= spec["burn_hours"] <= fuel["burn_hours"][1]:
            failures.append(Failure("fuel_hours", f"burn time {spec['burn_hours']} h is outside {fuel['burn_hours']}"))
        elif spec["burn_hours"] < params.get("min_hours", 0):
            failures.append(Failure("fuel_hours", f"burn time {spec['burn_hours']} h is under {params['min_hours']} h"))
        if params["ask_colour"] and spec["flame_colour"] != fuel["colour"]:
            failures.append(Failure("flame_colour", f"{params['fuel']} burns {fuel['colour']}, spec says "
                                                    f"{spec['flame_colour']!r}"))
        return failures

    def mutate(self, skill: str, params: dict[str, Any], spec: dict[str, Any], rules: Rules,
               rng: random.Random) -> dict[str, Any]:
        out = copy.deepcopy(spec)
        if skill == "fuel_hours":
            out["burn_hours"] = rules.data["fuels"][params["fuel"]]["burn_hours"][1] + 5
        elif skill == "flame_colour":
            out["flame_colour"] = "ultraviolet"
        else:
            raise KeyError(f"lantern has no skill {skill!r}")
        return out


# -- step 2: the rules file pair ---------------------------------------------------------------

RULES_YAML = """\
model_type: lantern
version: 1.0.0
description: Lanterns of the world; each fuel burns for a while in its own colour.
data:
  housings: [brass, paper, glass, iron]
  fuels:
    oil:     {burn_hours: [6, 12], colour: yellow}
    tallow:  {burn_hours: [2, 5], colour: orange}
    glowmoss: {burn_hours: [20, 60], colour: green}
"""

RULES_LORE = """\
# Lantern lore

## lantern.fuel.oil: Oil
Oil lanterns burn 6 to 12 hours with a steady yellow flame.

## lantern.fuel.tallow: Tallow
Tallow is cheap: 2 to 5 hours of smoky orange light.

## lantern.fuel.glowmoss: Glowmoss
Glowmoss is not fire at all: a green glow that lasts 20 to 60 hours.
"""


@pytest.fixture
def lantern(tmp_path, monkeypatch):
    """Steps 2 and 3: the rules files in a rules folder, and the registry line."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "lantern.yaml").write_text(RULES_YAML)
    (tmp_path / "rules" / "lantern.md").write_text(RULES_LORE)
    monkeypatch.setitem(domains.REGISTRY, "lantern", f"{__name__}:LanternDomain")
    monkeypatch.setattr(domains, "MODEL_TYPES", tuple(domains.REGISTRY))
    yield tmp_path / "rules"
    domains.get_domain.cache_clear()


def test_the_domain_keeps_the_contract(lantern):
    """What tests/test_domains.py checks for the seven, on the eighth."""
    domain = domains.get_domain("lantern")
    loaded = RulesIntegration(lantern).load("lantern")
    verifier = Verifier(domain, loaded)
    tasks = DynamicExampleGenerator(domain, loaded).generate(20, "train", 0)
    for task in tasks:
        domain.validate_params(task.params, loaded)
        plan = domain.plan(task.params, loaded)
        assert verifier.verify_trajectory(task, render_trajectory(plan.steps, plan.spec)).passed
        for skill in task.skills:
            broken = domain.mutate(skill, task.params, plan.spec, loaded, random.Random(0))
            assert verifier.verify_spec(task, broken).failed_skills == [skill]


def test_its_data_assets_materialize_over_eight_partitions(lantern, tmp_path):
    # Step 4 needs no code: the partitions come from the registry (srl_assets/partitions.py builds
    # them from MODEL_TYPES when the code location loads); here the assets get the same eight.
    eight = dg.StaticPartitionsDefinition(list(domains.MODEL_TYPES))
    assert len(eight.get_partition_keys()) == 8 and eight.get_partition_keys()[-1] == "lantern"
    assets = [a.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=eight))
              for a in (rules, task_examples, trajectories, srl_steps)]
    store = DuckDBStore(database=str(tmp_path / "srl.duckdb"))
    defs = dg.Definitions(assets=assets, resources={
        "duckdb_store": store, "rules_resource": RulesResource(rules_dir=str(lantern)),
        "teacher": TeacherResource(), "training": TrainingResource(work_root=str(tmp_path / "work"))})
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.partitions_def.get_partition_keys() == eight.get_partition_keys()
    config = {"ops": {"task_examples": {"config": {"n_train": 10, "n_eval": 4, "seed": 1}}}}
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(partition_key="lantern", instance=instance, run_config=config)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} == {"every_trajectory_passes_verifier", "steps_reassemble_trajectories"}
        assert all(c.passed for c in checks)
        materialized = {m.asset_key.path[-1] for m in result.get_asset_materialization_events()}
        assert materialized == {"rules", "task_examples", "trajectories", "srl_steps"}
    assert (store.read("task_examples", "lantern").split == "train").sum() == 10
    assert len(store.read("trajectories", "lantern")) == 10
    # Two reasoning steps and the final spec: three step instances per trajectory.
    assert len(store.read("srl_steps", "lantern")) == 30
