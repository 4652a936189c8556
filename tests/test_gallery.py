"""The performance report's gallery: candidates' outputs side by side as previews with verdicts."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

from srl_assets.collaboration.verifier import Verifier
from srl_assets.domains import get_domain
from srl_assets.dynamic_example_generator import DynamicExampleGenerator
from srl_assets.performance.gallery import build_gallery, final_spec_text, thumbnail
from srl_assets.performance.performance_tracker import EvalRecord
from srl_assets.prompts import strip_think
from srl_assets.rules_integration import RulesIntegration
from srl_assets.trajectory import render_trajectory

DATA_URI = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def _setup(model_type: str, n: int = 5):
    domain = get_domain(model_type)
    rules = RulesIntegration().load(model_type)
    tasks = DynamicExampleGenerator(domain, rules).generate(n, "eval", seed=3)
    return domain, rules, tasks, Verifier(domain, rules)


def _record(candidate: str, task, verifier: Verifier, output: str) -> EvalRecord:
    verdict = verifier.verify_trajectory(task, strip_think(output))  # as the evaluation does
    return EvalRecord(candidate=candidate, task_id=task.task_id, skills=task.skills, passed=verdict.passed,
                      score=verdict.score,
                      failed_skills=tuple(s for s in verdict.failed_skills if s in task.skills), format_ok=verdict.format_ok,
                      output_tokens=len(output.split()), latency_s=0.1, output=output)


def _outputs(model_type: str):
    """base writes junk, srl a spec broken on the task's first skill, rlvr the teacher's trajectory."""
    import random

    domain, rules, tasks, verifier = _setup(model_type)
    records = []
    for task in tasks:
        plan = domain.plan(task.params, rules)
        broken = domain.mutate(task.skills[0], task.params, plan.spec, rules, random.Random(0))
        records += [
            _record("base", task, verifier, "I think the answer is a nice tree."),
            _record("srl", task, verifier, render_trajectory(plan.steps, broken)),
            _record("rlvr", task, verifier, "<think>plan</think>" + render_trajectory(plan.steps, plan.spec)),
        ]
    return tasks, records, verifier


def test_gallery_shows_four_tasks_by_three_candidates_with_verdicts_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv("SRL_API_URL", raising=False)
    tasks, records, verifier = _outputs("tree")
    gallery = build_gallery("tree", tasks, records, tmp_path / "reports" / "tree" / "r1", verifier=verifier)
    lines = gallery.markdown.splitlines()
    assert lines[0] == "| task | base | srl | rlvr |"
    rows = [line for line in lines if line.startswith("| **")]
    assert len(rows) == 4  # the first 4 of the 5 held-out tasks
    for row in rows:
        base, srl, rlvr = row.split(" | ")[1:4]
        assert "**FAIL** · score 0.00 · `format`" in base
        assert "**FAIL**" in srl and "`" in srl  # the mutated skill is named
        assert "**PASS** · score 1.00" in rlvr
    assert gallery.images == 12 and len(gallery.files) == 12
    assert sorted(p.name for p in gallery.files)[:3] == ["task1-base.png", "task1-rlvr.png", "task1-srl.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in gallery.files)
    thumbs = DATA_URI.findall(gallery.markdown)
    assert len(thumbs) == 12
    with Image.open(io.BytesIO(base64.b64decode(thumbs[0]))) as image:
        assert image.width == 160
    assert len(gallery.markdown) < 250_000  # light enough for the UI
    assert "/v1/render" not in gallery.markdown


def test_gallery_links_the_render_api_when_it_runs_and_writes_wavs_for_sound(tmp_path, monkeypatch):
    monkeypatch.setenv("SRL_API_URL", "http://127.0.0.1:8080/")
    tasks, records, verifier = _outputs("sound")
    gallery = build_gallery("sound", tasks, records, tmp_path, n_tasks=1)
    assert "[POST http://127.0.0.1:8080/v1/render](http://127.0.0.1:8080/v1/render)" in gallery.markdown
    names = sorted(p.name for p in gallery.files)
    assert "task1-rlvr.wav" in names and "task1-rlvr.png" in names
    assert "task1-base.wav" not in names  # junk output: the unreadable image, no sound


def test_missing_outputs_and_candidates_show_as_such(tmp_path):
    _, _, tasks, verifier = _setup("plant", 2)
    old = EvalRecord("base", tasks[0].task_id, tasks[0].skills, False, 0.5, (tasks[0].skills[0],), True, 10, 0.1)
    gallery = build_gallery("plant", tasks, [old], tmp_path, n_tasks=2, candidates=["base", "rlvr"])
    rows = [line for line in gallery.markdown.splitlines() if line.startswith("| **")]
    assert "(output not stored)" in rows[0] and rows[0].endswith("| – |")
    assert rows[1].endswith("| – | – |")
    assert gallery.files == []


def test_final_spec_text_reads_the_last_step_like_the_verifier():
    assert final_spec_text('1. **Final spec** {"a": 1}') == '{"a": 1}'
    assert final_spec_text('<think>x</think>1. **Size** big\n2. **Final spec** {"b": 2}') == '{"b": 2}'
    assert final_spec_text("no steps here").startswith("line is not a step")


def test_thumbnail_keeps_the_aspect_ratio():
    from srl_assets.previews import render

    png = render("plant", {"name": "x", "height_m": 1}).png
    with Image.open(io.BytesIO(png)) as full, Image.open(io.BytesIO(thumbnail(png, 160))) as small:
        assert small.width == 160
        assert abs(small.height / small.width - full.height / full.width) < 0.02
