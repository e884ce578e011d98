"""Guards that keep a run from losing data or saving a wrong model. No Haystack import.

- :func:`check_output_dir`: an output folder is never an input's folder (or inside one) and never a folder
  holding files we did not write; a previous output of ours (listed in its manifest) may be replaced.
- :func:`write_manifest`: the files we wrote and their hashes, so a later run can tell ours from the user's
  (an edited weights file counts as the user's).
- :func:`check_writable`: an output's folder can be written before any work starts.
- :func:`check_own_folder`: a side folder we write into and delete (checkpoints, progress) holds only our entries.
- :func:`check_finite`: a model with NaN/inf weights is refused before it is saved.
- :func:`check_finite_value`: training stops at the first non-finite loss or gradient norm.
- :func:`check_finite_array`: cached teacher outputs with NaN/inf are refused.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Union

import torch
from torch import nn

from .fingerprint import fingerprint_file

PathLike = Union[str, Path]
MANIFEST = ".haystack-distill-output.json"


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient or weight."""


def check_finite(model: nn.Module, what: str = "the model") -> None:
    """Raise :class:`DivergenceError` if any parameter or buffer of ``model`` holds NaN or inf."""
    bad = [name for name, t in [*model.named_parameters(), *model.named_buffers()]
           if torch.is_floating_point(t) and not bool(torch.isfinite(t).all())]
    if bad:
        raise DivergenceError(f"{what} has non-finite weights in {len(bad)} tensors (first: {bad[0]}); it was not "
                              "saved. Lower the learning rate or check the teacher's outputs for NaN.")


def check_finite_value(value: float, step: int, last_finite: Optional[float], what: str = "loss") -> None:
    """Raise :class:`DivergenceError` naming the step when ``value`` (``what``: ``"loss"`` or ``"grad"``, the
    gradient norm before the update) is NaN or inf.

    Example:
        >>> check_finite_value(0.5, 3, 0.6)
        >>> check_finite_value(float("nan"), 3, 0.6)
        Traceback (most recent call last):
        ...
        haystack_distill.safety.DivergenceError: training diverged at step 3: loss is nan (last finite loss 0.6). \
Lower learning_rate, keep max_grad_norm on, or check the teacher's outputs for NaN.
    """
    if math.isfinite(value):
        return
    last = "none" if last_finite is None else f"{last_finite:.4g}"
    if what == "loss":
        raise DivergenceError(f"training diverged at step {step}: loss is {value} (last finite loss {last}). Lower "
                              "learning_rate, keep max_grad_norm on, or check the teacher's outputs for NaN.")
    raise DivergenceError(f"training diverged at step {step}: the gradient norm is {value} (last finite loss "
                          f"{last}); the weights were not updated. Lower learning_rate or check the inputs and the "
                          "teacher's outputs for NaN/inf.")


def grad_norm(params: Iterable[nn.Parameter]) -> float:
    """The total L2 norm of the gradients of ``params`` (those without a gradient skipped), as clipping computes it.

    Example:
        >>> p = nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
        >>> grad_norm([p])
        5.0
    """
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))


def check_finite_array(values: Any, what: str) -> None:
    """Raise :class:`DivergenceError` if a NumPy array or tensor (e.g. cached teacher outputs) holds NaN or inf."""
    import numpy as np

    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    bad = 0
    for start in range(0, len(array), 4096):  # in blocks: a memory-mapped cache is never read whole into RAM
        bad += int(np.size(array[start:start + 4096]) - np.isfinite(array[start:start + 4096]).sum())
    if bad:
        raise DivergenceError(f"{what} holds {bad} NaN/inf values; a model trained on them would be wrong. Check "
                              "the teacher (a diverged or fp16-overflowing model) and recompute.")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _input_folder(path: PathLike) -> Optional[Path]:
    p = Path(path).expanduser()
    if not p.exists():
        return None
    p = p.resolve()
    return p if p.is_dir() else p.parent


class UnsafeOutputError(ValueError):
    """An output folder would replace an input or files this tool did not write."""


def check_output_dir(output: PathLike, inputs: Iterable[Any] = (), marker: Optional[str] = None,
                     legacy: Sequence[str] = ()) -> Path:
    """Return ``output`` if it is safe to (re)write: not an input folder or inside one, and either new, empty,
    or a previous output of ours with no foreign files. Raise :class:`UnsafeOutputError` naming the fix otherwise.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> check_output_dir(d / "new", inputs=[d / "teacher"]).name
        'new'

    ``marker`` and ``legacy``: a folder without a manifest but holding ``marker`` (an output of an older version)
    counts as ours if every file in it matches one of the ``legacy`` glob patterns.
    """
    out = Path(output).expanduser().resolve()
    for item in inputs:
        folder = _input_folder(item) if isinstance(item, (str, Path)) else None
        if folder is not None and _inside(out, folder):
            raise UnsafeOutputError(f"output folder {output} is {'the' if out == folder else 'inside the'} input "
                                    f"folder {folder}; writing there would replace the model you read. Choose another "
                                    "folder.")
        if folder is not None and folder != out and _inside(folder, out):
            raise UnsafeOutputError(f"output folder {output} contains the input {item}; replacing it would delete "
                                    "that input. Choose another folder.")
    if out.is_file():
        raise UnsafeOutputError(f"output {output} is a file; give a folder path.")
    check_writable(out)
    if out.is_dir() and any(out.iterdir()):
        foreign = foreign_files(out, marker, legacy)
        if foreign:
            shown = ", ".join(sorted(foreign)[:5])
            raise UnsafeOutputError(f"output folder {output} holds files this tool did not write or that were "
                                    f"changed since ({shown}); choose a new or empty folder, or move those files "
                                    "away.")
    return out


def check_writable(output: PathLike) -> Path:
    """Return ``output`` if a file or folder can be created beside it; raise :class:`UnsafeOutputError` first
    otherwise (its nearest existing parent is a file, or creating an entry there fails), so a run never fails
    only at save time.

    Example:
        >>> import tempfile, pathlib
        >>> check_writable(pathlib.Path(tempfile.mkdtemp()) / "a" / "b").name
        'b'
    """
    path = Path(output).expanduser().absolute()
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UnsafeOutputError(f"cannot write {output}: {parent} is a file, not a folder. Choose another path.")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".haystack-distill-probe-")
    except OSError as err:
        raise UnsafeOutputError(f"cannot write {output}: creating a file in {parent} fails ({err.strerror}). "
                                "Choose a folder you can write to.") from err
    os.close(fd)
    os.unlink(probe)
    return path


def check_own_folder(folder: PathLike, ours: Callable[[Path], bool], fix: str) -> None:
    """Refuse a side folder a run writes into and later deletes (checkpoints, progress) if it holds an entry
    ``ours`` does not recognise: it is the user's, and deleting the folder would lose it. ``fix`` ends the
    message."""
    folder = Path(folder).expanduser()
    if folder.is_file():
        raise UnsafeOutputError(f"{folder} is a file this tool did not write, where it keeps its working files; "
                                f"{fix}")
    foreign = sorted(p.name for p in folder.iterdir() if not ours(p)) if folder.is_dir() else []
    if foreign:
        raise UnsafeOutputError(f"{folder} holds entries this tool did not write ({', '.join(foreign[:5])}), "
                                f"where it keeps its working files and deletes them when done; {fix}")


def foreign_files(folder: Path, marker: Optional[str] = None, legacy: Sequence[str] = ()) -> list:
    """Files in ``folder`` not listed in its manifest, or listed with another hash (edited since we wrote them);
    all of them when it has none, unless ``marker`` marks an older output of ours: then those not matching a
    ``legacy`` pattern."""
    listed: set = set()
    hashes: Dict[str, str] = {}
    manifest = folder / MANIFEST
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    if manifest.is_file():
        try:
            content = json.loads(manifest.read_text())
            listed = set(content["files"]) | {MANIFEST}
            hashes = dict(content.get("sha256", {}))
        except (ValueError, KeyError, TypeError):
            listed = set()
    elif marker and (folder / marker).is_file():
        listed = {name for name in present if any(fnmatch.fnmatch(name, pattern) for pattern in legacy)}
    edited = {name for name, digest in hashes.items()
              if name in present and fingerprint_file(folder / name, "sha256") != digest}
    return sorted((present - listed) | edited)


def write_manifest(folder: Path, what: str) -> None:
    """List every file now in ``folder`` as ours, with its SHA-256 (call last, inside the temporary folder before
    the swap)."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    hashes = {name: fingerprint_file(folder / name, "sha256") for name in files}
    (folder / MANIFEST).write_text(json.dumps({"written_by": "haystack-distill", "what": what, "files": files,
                                               "sha256": hashes}, indent=1))
