"""The ``checkpoint-<step>/`` folders a training run leaves in its work folder, oldest first.

Both resume paths use it: TRL/transformers Trainer runs (complete = a readable
``trainer_state.json``, which the Trainer writes last) and the project's PPO (complete = its
``COMPLETE`` marker).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def numbered_checkpoints(folder: str | Path, is_complete: Callable[[Path], bool]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete ``checkpoint-<step>`` folder in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name)) and is_complete(p)]
    return sorted(found)
