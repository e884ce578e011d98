"""Atomic output helpers: write to a temporary sibling, then rename, so no reader sees half a file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_permissions(path: PathLike) -> Path:
    """Give ``path`` (a file, or a folder and everything in it) the mode a plain ``open``/``mkdir`` would: files
    ``0o666 & ~umask`` (``0o777`` for executables), folders ``0o777 & ~umask``; returns ``path``.

    ``tempfile.mkdtemp`` (0700) and safetensors' ``save_file`` (0600) create private files, which another user
    (a model server) could not read.

    Example:
        >>> import stat, tempfile
        >>> folder = Path(tempfile.mkdtemp())  # created 0700
        >>> old = os.umask(0o022); _ = usual_permissions(folder); _ = os.umask(old)
        >>> oct(stat.S_IMODE(folder.stat().st_mode))
        '0o755'
    """
    path = Path(path)
    mask = _umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if item.is_symlink():
            continue
        executable = item.is_dir() or item.stat().st_mode & 0o111
        os.chmod(item, (0o777 if executable else 0o666) & ~mask)
    return path


@contextlib.contextmanager
def atomic_writer(path: PathLike, encoding: str = "utf-8") -> Iterator[Any]:
    """Text handle on a same-directory temp file that replaces ``path`` (fsync + ``os.replace``) on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, encoding) as handle:
        handle.write(text)
    return Path(path)


def decode_utf8(raw: bytes, what: str) -> str:
    """``raw`` as UTF-8 text; a ``ValueError`` naming ``what`` (e.g. ``"--questions q.txt"``), the first bad byte
    and a fix otherwise.

    Example:
        >>> decode_utf8("café".encode(), "f.txt")
        'café'
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} is not UTF-8 text (byte {err.start}); convert it, e.g. iconv -f latin1 -t utf-8."
                         ) from err


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, so strict JSON parsers read the file.

    Example:
        >>> strict_json({"loss": float("nan"), "f1": [1.5, float("inf")]})
        {'loss': None, 'f1': [1.5, None]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: strict_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(value) for value in obj]
    return obj


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    """Serialise ``obj`` as strict JSON (non-finite numbers become null) and write it atomically."""
    text = json.dumps(strict_json(obj), indent=indent, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def ensure_new_output(path: PathLike, overwrite: bool = False, flag: str = "--overwrite") -> Path:
    """Refuse to replace an existing file or non-empty directory unless ``overwrite`` is set, or to write where
    nothing can be created (:func:`haystack_distill.safety.check_writable`)."""
    from .safety import check_writable

    path = Path(path)
    exists = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if exists and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output path or pass {flag} to replace it.")
    check_writable(path)
    return path


#: The name part and the marker file of :func:`atomic_dir`'s work folders (``.<name>.partial-<random>``).
PARTIAL = ".partial-"
PARTIAL_MARKER = ".haystack-distill-partial.json"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a pid we cannot ask about): leave its folder alone
    return True


def remove_stale_partials(parent: PathLike) -> list:
    """Delete the work folders :func:`atomic_dir` left in ``parent`` when its process was killed (``kill -9``,
    power loss); returns their paths.

    Only a folder named ``.<name>.partial-*`` that holds our marker, written on this host by a process that no
    longer runs, is touched; anything else (a folder we did not write, a live run's) is left as it is. If the kill
    came between moving the previous output aside and moving the new one in, the previous one is put back.
    """
    import socket

    removed = []
    for work in Path(parent).glob(f".*{PARTIAL}*"):
        try:
            mark = json.loads((work / PARTIAL_MARKER).read_text(encoding="utf-8"))
            pid, host, target = int(mark["pid"]), mark["host"], Path(parent) / mark["target"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours
        if work.is_symlink() or host != socket.gethostname() or _process_alive(pid):
            continue
        previous = work / mark.get("previous", "")
        if mark.get("previous") and previous.is_dir() and not os.path.lexists(target):
            os.replace(previous, target)
        shutil.rmtree(work, ignore_errors=True)
        removed.append(work)
    return removed


@contextlib.contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Yield a new empty directory next to ``path``; on success it replaces ``path`` in one rename.

    The directory lives in a work folder ``.<name>.partial-<random>`` beside ``path`` with a marker naming this
    process; the work folders a killed run left in the same parent are removed first
    (:func:`remove_stale_partials`). An existing ``path`` is moved into the work folder first and deleted only
    after the new directory is in place. Everything in the new directory gets the usual permissions first
    (:func:`usual_permissions`), whoever wrote it.
    """
    import socket

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent)
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}{PARTIAL}"))
    previous = f"{path.name}.previous"
    try:
        (work / PARTIAL_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                       "target": path.name, "previous": previous}) + "\n")
        tmp = work / path.name
        tmp.mkdir()
        yield tmp
        usual_permissions(tmp)
        moved = os.path.lexists(path)
        if moved:
            os.replace(path, work / previous)
        try:
            os.replace(tmp, path)
        except BaseException:
            if moved:
                os.replace(work / previous, path)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
