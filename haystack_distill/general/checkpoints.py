"""The checkpoint folder of a general-distillation run: which entries are ours, and their removal once the model
is saved."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict


def checkpoint_entry(path: Path) -> bool:
    """Is ``path`` an entry the training loop writes in its checkpoint folder?"""
    return path.is_dir() and (path.name.startswith("step-") or path.name.startswith(".tmp-step-"))


def remove_own_checkpoints(folder: Path, run_fields: Dict[str, Any]) -> None:
    """Delete this run's checkpoints in ``folder`` (and ``folder`` once empty); another run's stay."""
    from ..training import checkpoint_run_id, run_id

    mine = run_id(run_fields)
    for entry in folder.iterdir() if folder.is_dir() else ():
        if checkpoint_entry(entry) and (entry.name.startswith(".tmp-") or checkpoint_run_id(entry) == mine):
            shutil.rmtree(entry, ignore_errors=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
