"""srl_checkpoint's step rows (srl_stage_rows): which step instances SRL trains on under each step_rows."""

import pandas as pd
import pytest

from srl_assets.assets.training import srl_stage_rows


def _steps() -> pd.DataFrame:
    # three trajectories of two steps; task ids out of order so the slice must sort them
    rows = [{"task_id": t, "step_index": k, "n_steps": 2, "prompt": f"{t} p{k}", "target": f"{t} s{k}"}
            for t in ("t3", "t1", "t2") for k in (1, 2)]
    return pd.DataFrame(rows)


def test_unseen_leaves_out_the_bases_slice_by_sorted_task_id():
    rows = srl_stage_rows("plant", _steps(), "unseen", 2)
    assert [r["prompt"] for r in rows] == ["t3 p1", "t3 p2"]
    assert [r["last"] for r in rows] == [False, True]


def test_all_and_informative():
    assert len(srl_stage_rows("plant", _steps(), "all", 2)) == 6
    kept = pd.DataFrame([{"task_id": "t2", "step_index": 2}, {"task_id": "t2", "step_index": 2}])
    rows = srl_stage_rows("plant", _steps(), "informative", 0, kept)
    assert rows == [{"prompt": "t2 p2", "target": "t2 s2", "last": True}]


def test_no_rows_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"plant: no step instance to train SRL on \(step_rows='unseen'\)"):
        srl_stage_rows("plant", _steps(), "unseen", 3)
    with pytest.raises(ValueError, match="step_rows 'informative' needs"):
        srl_stage_rows("plant", _steps(), "informative", 0)
