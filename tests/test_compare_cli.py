"""`make compare` (srl_assets/compare.py): its console table reads each type's row from this invocation's
comparison (not an older one of the same type), the verdicts count strict wins only, and a recipe left out
of the run shows as a dash instead of failing the table; its runs draw the same tasks every time unless the
preset says otherwise; with several seeds it pools each seed's discordant tasks."""

import pandas as pd
import pytest

from resources.duckdb_store import DuckDBStore
from srl_assets.assets.recipes import HISTORY, PAIRWISE
from srl_assets.compare import (TASK_SEED, comparison_table, main, pooled_table, verdict, with_fixed_draw,
                                 with_seed)


def _write(store: DuckDBStore, model_type: str, comparison_id: str, rates: dict[str, float],
           p: dict[tuple[str, str], float]) -> None:
    store.append(HISTORY, pd.DataFrame([{"model_type": model_type, "comparison_id": comparison_id, "recipe": r,
                                         "pass_rate": v, "n_tasks": 200} for r, v in rates.items()]))
    store.append(PAIRWISE, pd.DataFrame([{"model_type": model_type, "comparison_id": comparison_id, "a": a, "b": b,
                                          "mcnemar_p": v} for (a, b), v in p.items()]))


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "srl.duckdb"
    monkeypatch.setenv("SRL_DUCKDB_PATH", str(path))
    return DuckDBStore(database=str(path))


def test_rows_come_from_this_runs_comparisons_and_wins_are_strict(store):
    full = {("srl", "start"): 0.04, ("srl_rlvr", "rlvr"): 0.5}
    # An older plant comparison where SRL won: the table must not read it.
    _write(store, "plant", "old", {"start": 0.1, "sft": 0.1, "rlvr": 0.1, "srl": 0.9, "srl_rlvr": 0.9}, full)
    _write(store, "plant", "new", {"start": 0.2, "sft": 0.3, "rlvr": 0.25, "srl": 0.3, "srl_rlvr": 0.25}, full)
    _write(store, "tree", "t1", {"start": 0.1, "sft": 0.2, "rlvr": 0.3, "srl": 0.1, "srl_rlvr": 0.35}, full)

    lines, wins, compared = comparison_table(["plant", "tree"], {"plant": "new", "tree": "t1"})

    assert lines[2] == "| plant | 0.200 | 0.300 | 0.250 | 0.300 | 0.250 | +0.100 (0.04) | +0.000 (0.5) | 200 |"
    assert lines[3].startswith("| tree | 0.100 | 0.200 | 0.300 | 0.100 | 0.350 | +0.000 (0.04) | +0.050 (0.5) |")
    # plant: SRL beats the start, SRL->RLVR only ties RLVR; tree: SRL ties the start, SRL->RLVR wins.
    assert wins == {"srl_beats_start": 1, "srl_rlvr_beats_rlvr": 1}
    assert compared == {"srl_beats_start": 2, "srl_rlvr_beats_rlvr": 2}


def test_a_recipe_left_out_shows_a_dash_and_its_verdict_says_not_compared(store):
    _write(store, "plant", "c", {"start": 0.2, "sft": 0.3}, {("sft", "start"): 0.3})
    lines, wins, compared = comparison_table(["plant"], {"plant": "c"})
    assert lines[2] == "| plant | 0.200 | 0.300 | — | — | — | — | — | 200 |"
    assert wins == {"srl_beats_start": 0, "srl_rlvr_beats_rlvr": 0}
    assert compared == {"srl_beats_start": 0, "srl_rlvr_beats_rlvr": 0}
    # A run without SRL-only must not read as "SRL-only beats the start in 0 of 7".
    assert verdict("SRL-only beats the start", 0, 0, 7) == "SRL-only beats the start: not compared (a recipe left out)"
    assert verdict("SRL-only beats the start", 0, 7, 7) == "SRL-only beats the start in 0 of 7"
    assert verdict("SRL-only beats the start", 1, 3, 7) == "SRL-only beats the start in 1 of 7 (3 compared)"


def test_the_task_draw_is_fixed_unless_the_preset_sets_one():
    assert with_fixed_draw({})["ops"]["task_examples"]["config"] == {"seed": TASK_SEED}
    preset = {"ops": {"task_examples": {"config": {"seed": 7, "n_train": 300}},
                      "recipe_comparison": {"config": {"budget_steps": 10}}}, "execution": {}}
    merged = with_fixed_draw(preset)
    assert merged["ops"]["task_examples"]["config"] == {"seed": 7, "n_train": 300}
    assert merged["ops"]["recipe_comparison"] == preset["ops"]["recipe_comparison"] and "execution" in merged
    kept = {"ops": {"task_examples": {"config": {"n_train": 300}}}}
    assert with_fixed_draw(kept)["ops"]["task_examples"]["config"] == {"n_train": 300, "seed": TASK_SEED}
    assert kept == {"ops": {"task_examples": {"config": {"n_train": 300}}}}  # the caller's dict is not changed


def test_the_fixed_draw_is_a_valid_run_config_of_the_job():
    import dagster as dg

    from srl_assets.definitions import defs

    job = defs.resolve_job_def("compare_recipes")
    assert dg.validate_run_config(job, with_fixed_draw({}))


def _pairs(store: DuckDBStore, model_type: str, comparison_id: str, a_only: int, b_only: int, n: int = 200) -> None:
    store.append(PAIRWISE, pd.DataFrame([{"model_type": model_type, "comparison_id": comparison_id, "a": "srl_rlvr",
                                          "b": "rlvr", "n_tasks": n, "a_only": a_only, "b_only": b_only,
                                          "delta": (a_only - b_only) / n, "mcnemar_p": 1.0}]))


def test_pooling_adds_each_seeds_discordant_tasks_from_this_invocations_runs(store):
    # plant: seed 0 wins by 4 tasks, seed 1 loses by 10: pooled it loses. tree: two small wins pool into a win.
    _pairs(store, "plant", "p0", 14, 10)
    _pairs(store, "plant", "p1", 5, 15)
    _pairs(store, "plant", "old", 90, 0)  # an older run of the same type and seed: not read
    _pairs(store, "tree", "t0", 3, 2)
    _pairs(store, "tree", "t1", 4, 3)

    lines, wins, compared = pooled_table(["plant", "tree"], {0: {"plant": "p0", "tree": "t0"},
                                                             1: {"plant": "p1", "tree": "t1"}}, "srl_rlvr", "rlvr")

    assert lines[0] == ("| model type | seed 0 | seed 1 | pooled SRL→RLVR − RLVR-only | tasks only SRL→RLVR / "
                        "only RLVR-only passes | p |")
    # (19 - 25) / 400; exact McNemar on 19 of 44 discordant pairs.
    assert lines[2] == "| plant | +0.020 | -0.050 | -0.015 | 19 / 25 | 0.45 |"
    assert lines[3] == "| tree | +0.005 | +0.005 | +0.005 | 7 / 5 | 0.77 |"
    assert (wins, compared) == (1, 2)


def test_a_type_missing_from_a_seeds_runs_shows_dashes_and_no_win(store):
    _pairs(store, "plant", "p0", 30, 0)
    lines, wins, compared = pooled_table(["plant"], {0: {"plant": "p0"}, 1: {"plant": "gone"}}, "srl_rlvr", "rlvr")
    assert lines[2] == "| plant | — | — | — | — | — |" and (wins, compared) == (0, 0)


def test_a_seed_overrides_the_presets_and_keeps_the_rest():
    preset = {"ops": {"recipe_comparison": {"config": {"budget_steps": 180, "seed": 5}}}, "execution": {}}
    seeded = with_seed(preset, 2)
    assert seeded["ops"]["recipe_comparison"]["config"] == {"budget_steps": 180, "seed": 2}
    assert preset["ops"]["recipe_comparison"]["config"]["seed"] == 5  # the caller's dict is not changed
    assert with_seed({}, 1) == {"ops": {"recipe_comparison": {"config": {"seed": 1}}}}


def test_the_seeded_draw_is_a_valid_run_config_of_the_job():
    import dagster as dg

    from srl_assets.definitions import defs

    assert dg.validate_run_config(defs.resolve_job_def("compare_recipes"), with_fixed_draw(with_seed({}, 3)))


def test_a_repeated_seed_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        main(["--seeds", "0", "1", "0"])
    assert "repeats a seed" in capsys.readouterr().err
