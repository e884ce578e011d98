"""Checkpoints for exact resume: ``root/step-N/`` holds ``state.pt`` (modules, optimizer, scheduler, RNG states,
data position, run fields), ``checksum.json`` and ``run.json`` (the run's identity, readable without loading the
state). Saving is atomic and prunes only the same run's older checkpoints; resuming verifies checksums, falls back
past corrupt checkpoints and refuses another run's."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..fingerprint import fingerprint_file, fingerprint_value
from ..safety import check_finite
from .config import TrainConfig
from .rng import _rng_state, _set_rng_state

logger = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A resume checkpoint belongs to a different run (teacher, student or configuration)."""


class CheckpointCorruptError(ValueError):
    """A checkpoint file is truncated, unreadable or fails its checksum."""


CHECKSUM = "checksum.json"  # {"state.pt": blake2b of its bytes}, written after state.pt
RUN_ID = "run.json"  # {"run_id": ...}: which run wrote the checkpoint, readable without loading state.pt


def _checkpoints(root: Path) -> List[Path]:
    return sorted(root.glob("step-[0-9]*"), key=lambda p: int(p.name.split("-")[1]))


def run_id(run_fields: Dict[str, Any]) -> str:
    """A short hash of everything that identifies a run (its ``run_fields``)."""
    return fingerprint_value({k: str(v) for k, v in run_fields.items()}, "blake2b-96")


def checkpoint_run_id(path: Path) -> Optional[str]:
    """The run id a checkpoint folder was written by, or None (an older checkpoint, or not one of ours)."""
    try:
        return str(json.loads((path / RUN_ID).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_checkpoint_dir(root: Path, run_fields: Dict[str, Any], resuming: bool) -> None:
    """Before training: remove the half-written checkpoints a killed run left (``.tmp-step-N``, never complete,
    never read) and refuse a fresh run in a folder holding another run's checkpoints (it would overwrite or prune
    them), naming the way out."""
    for partial in root.glob(".tmp-step-*") if root.is_dir() else ():
        shutil.rmtree(partial, ignore_errors=True)
    if resuming or not root.is_dir():
        return
    mine = run_id(run_fields)
    others = [p.name for p in _checkpoints(root) if checkpoint_run_id(p) != mine]
    if others:
        raise CheckpointMismatchError(
            f"{root} holds checkpoints of another run ({', '.join(others[:3])}); a new run would overwrite them. "
            "Use another checkpoint folder (--checkpoint-dir / checkpoint_root_dir), or delete those folders.")


def save_checkpoint(root: Path, modules: Dict[str, nn.Module], optimizer, scheduler, progress: Dict[str, int],
                    run_fields: Dict[str, Any], keep: int) -> Path:
    """Write ``root/step-N/state.pt`` atomically and prune to the newest ``keep``."""
    for name, module in modules.items():
        check_finite(module, f"the {name} at step {progress['global_step']}")
    target = root / f"step-{progress['global_step']}"
    tmp = root / f".tmp-step-{progress['global_step']}"
    tmp.mkdir(parents=True, exist_ok=True)
    state = {
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "progress": progress,
        "run_fields": {k: str(v) for k, v in run_fields.items()},
    }
    torch.save(state, tmp / "state.pt")
    mine = run_id(run_fields)
    (tmp / RUN_ID).write_text(json.dumps({"run_id": mine}))
    (tmp / CHECKSUM).write_text(json.dumps({"state.pt": fingerprint_file(tmp / "state.pt")}))  # written last
    if target.exists():
        if checkpoint_run_id(target) != mine:
            raise CheckpointMismatchError(f"{target} belongs to another run; it was not replaced.")
        shutil.rmtree(target)
    tmp.rename(target)
    own = [p for p in _checkpoints(root) if checkpoint_run_id(p) == mine]  # never prune another run's
    for old in own[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """The state in ``path/state.pt``, verified against its checksum; :class:`CheckpointCorruptError` otherwise."""
    state_file = path / "state.pt"
    checksum = path / CHECKSUM
    try:
        if checksum.is_file() and json.loads(checksum.read_text())["state.pt"] != fingerprint_file(state_file):
            raise CheckpointCorruptError(f"checkpoint {state_file} is corrupt: its checksum does not match "
                                         f"{checksum.name}.")
        return torch.load(state_file, map_location="cpu", weights_only=True)
    except CheckpointCorruptError:
        raise
    except Exception as err:  # truncated, empty (EOFError), unpicklable, missing ...
        raise CheckpointCorruptError(f"checkpoint {state_file} cannot be read ({type(err).__name__}: {err}).") from err


def _resolve_resume(config: TrainConfig) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """(checkpoint folder, its verified state) to resume from, falling back past corrupt ones; None: start fresh."""
    if not config.resume:
        return None
    if isinstance(config.resume, (str, Path)) and not isinstance(config.resume, bool):
        path = Path(config.resume)
        if (path / "state.pt").is_file():
            return path, read_checkpoint(path)  # the checkpoint asked for, or an error naming it
        candidates = _checkpoints(path)
        if not candidates:
            raise FileNotFoundError(f"resume={config.resume!r}: no checkpoint (step-*/state.pt) found there.")
    elif not config.checkpoint_dir:
        raise ValueError("resuming needs the folder where the interrupted run saved its checkpoints: pass "
                         "--checkpoint-dir (checkpoint_root_dir in Python).")
    else:
        candidates = _checkpoints(Path(config.checkpoint_dir))
        if not candidates:
            logger.debug("resume=True but no checkpoint in %s: starting from scratch", config.checkpoint_dir)
            return None
    errors = []
    for path in reversed(candidates):
        try:
            state = read_checkpoint(path)
        except CheckpointCorruptError as err:
            logger.warning("%s Falling back to the previous checkpoint.", err)
            errors.append(str(err))
            continue
        return path, state
    raise CheckpointCorruptError(" ".join(errors) + " No readable checkpoint is left: delete these folders and "
                                                    "start again without --resume (resume=False in Python).")


def load_checkpoint(path: Path, modules: Dict[str, nn.Module], optimizer, scheduler,
                    run_fields: Dict[str, Any], state: Optional[Dict[str, Any]] = None) -> Dict[str, int]:
    """Restore a checkpoint saved by :func:`save_checkpoint`; refuse one from a different run or a corrupt one."""
    state = read_checkpoint(path) if state is None else state
    saved, current = state["run_fields"], {k: str(v) for k, v in run_fields.items()}
    differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differing:
        raise CheckpointMismatchError(
            f"checkpoint {path} is from a different run: {', '.join(differing)} differ "
            f"(checkpoint {[saved.get(k) for k in differing]} vs now {[current.get(k) for k in differing]}); "
            "resume only the run that wrote it, or start this one in another checkpoint folder "
            "(--checkpoint-dir / checkpoint_root_dir) without --resume."
        )
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    logger.info("resumed from %s (epoch %d, batch %d)", path, state["progress"]["epoch"],
                state["progress"]["batch"])
    return state["progress"]
