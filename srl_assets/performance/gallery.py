"""The report's gallery: what each candidate wrote for the same held-out tasks, as previews.

For the first few tasks of a report, each candidate's final spec is parsed from its trajectory
(the way the Verifier reads it), rendered (``srl_assets.previews``), written as PNG (and WAV for
sound) files next to the report, and laid out as a Markdown table: one row per task, one column
per candidate, each cell a thumbnail with the verdict. The Dagster UI cannot read local files, so
the thumbnails are embedded as base64 data URIs, downscaled to keep the page light.
"""

from __future__ import annotations

import base64
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from srl_assets.collaboration.verifier import FORMAT_SKILL, Verifier
from srl_assets.domains.base import Domain, Failure, Rules
from srl_assets.dynamic_example_generator import Task
from srl_assets.performance.performance_tracker import EvalRecord
from srl_assets.previews import render
from srl_assets.prompts import strip_think
from srl_assets.trajectory import parse_trajectory

API_URL_ENV = "SRL_API_URL"
DEFAULT_CANDIDATES = ("base", "srl", "rlvr")


@dataclass
class Gallery:
    markdown: str
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0  # time spent rendering and writing, to keep an eye on the demo's budget
    images: int = 0


def final_spec_text(output: str) -> Any:
    """The final step's spec text as the Verifier reads it, or the trajectory error.

    A trajectory with format errors but a last step still yields that step, so the gallery shows
    what the model meant; with no step at all the reason is returned (rendered as unreadable).
    """
    parsed = parse_trajectory(strip_think(output))
    if parsed.steps:
        return parsed.steps[-1].action
    return "; ".join(parsed.errors[:2]) or "no output"


def build_gallery(model_type: str, tasks: Sequence[Task], records: Sequence[EvalRecord], out_dir: Path | str,
                  verifier: Verifier | None = None, n_tasks: int = 4,
                  candidates: Sequence[str] | None = None, thumb_width: int = 160,
                  api_url: str | None = None) -> Gallery:
    """Render the first ``n_tasks`` tasks' outputs of each candidate into ``out_dir``; Markdown out.

    ``verifier`` (optional) re-checks each output to name the reason of each failure on the image;
    without it the failed skills of the records are marked. ``api_url`` defaults to
    ``$SRL_API_URL``; when set, the table links to the API's ``/v1/render``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_key = {(r.candidate, r.task_id): r for r in records}
    present = list(dict.fromkeys(r.candidate for r in records))
    names = list(candidates) if candidates is not None else (
        [c for c in DEFAULT_CANDIDATES if c in present] + [c for c in present if c not in DEFAULT_CANDIDATES])
    shown = list(tasks[:n_tasks])
    gallery = Gallery("")
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for i, task in enumerate(shown, start=1):
        cells = [f"**{i}.** {_escape(task.prompt, 160)}"]
        for name in names:
            record = by_key.get((name, task.task_id))
            cells.append(_cell(model_type, i, task, name, record, out, verifier, thumb_width, gallery))
        lines.append("| " + " | ".join(cells) + " |")
    if not shown:
        lines.append("| (no evaluated tasks) |" + " |" * len(names))
    url = api_url if api_url is not None else os.environ.get(API_URL_ENV, "")
    lines.append("")
    lines.append(f"Full-size previews: `{out}`" + (f" · render any spec: [POST {url.rstrip('/')}/v1/render]"
                                                   f"({url.rstrip('/')}/v1/render)" if url else ""))
    gallery.markdown = "\n".join(lines)
    gallery.seconds = time.perf_counter() - t0
    return gallery


def _cell(model_type: str, index: int, task: Task, candidate: str, record: EvalRecord | None, out: Path,
          verifier: Verifier | None, thumb_width: int, gallery: Gallery) -> str:
    if record is None:
        return "–"
    if not record.output:
        return f"{_verdict(record)}<br>(output not stored)"
    text = strip_think(record.output)
    spec_text = final_spec_text(record.output)
    if verifier is not None:
        failures = verifier.verify_trajectory(task, text).failures
    else:
        failures = [Failure(s, "failed") for s in record.failed_skills]
        if not record.format_ok:
            failures.append(Failure(FORMAT_SKILL, "the output could not be read as a spec"))
    rendering = render(model_type, spec_text, failures)
    stem = f"task{index}-{_safe(candidate)}"
    gallery.files.append(_write(out / f"{stem}.png", rendering.png))
    gallery.images += 1
    extra = ""
    if rendering.wav is not None:
        gallery.files.append(_write(out / f"{stem}.wav", rendering.wav))
        extra = f" · `{stem}.wav`"
    thumb = base64.b64encode(thumbnail(rendering.png, thumb_width)).decode()
    return f"![{candidate} task {index}](data:image/png;base64,{thumb})<br>{_verdict(record)}{extra}"


def _verdict(record: EvalRecord) -> str:
    head = "**PASS**" if record.passed else "**FAIL**"  # plain text: the UI's fonts may lack emoji glyphs
    text = f"{head} · score {record.score:.2f}"
    if record.failed_skills:
        text += " · " + ", ".join(f"`{s}`" for s in record.failed_skills)
    elif not record.format_ok:
        text += " · `format`"
    return text


def thumbnail(png: bytes, width: int) -> bytes:
    """The PNG scaled to ``width`` pixels wide (Pillow ships with matplotlib)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        height = max(1, round(rgb.height * width / rgb.width))
        small = rgb.resize((width, height), Image.Resampling.LANCZOS)
        # A 64-colour palette: a third of the bytes of RGB, no visible loss at thumbnail size.
        small = small.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    """Write aside, then rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40] or "candidate"


def _escape(text: str, limit: int) -> str:
    """One table cell of plain text: no pipes or newlines to break the row."""
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def report_gallery(model_type: str, domain: Domain, rules: Rules, tasks: Sequence[Task],
                   records: Sequence[EvalRecord], dagster_home: Path | str, report_id: str) -> Gallery:
    """The gallery of one performance report, its files in ``<DAGSTER_HOME>/reports/<type>/<report id>/``."""
    out = Path(dagster_home) / "reports" / model_type / report_id
    return build_gallery(model_type, tasks, records, out, verifier=Verifier(domain, rules))
