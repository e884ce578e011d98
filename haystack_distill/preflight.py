"""Input checks that need no model, one helper per concern; every sub-command calls them before it loads one.

Each raises an error naming the flag, the bad value and the fix (the CLI prints it on one line, exit code 2).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> try:
    ...     check_output_folder("--output", d, {"--teacher": d}, overwrite=True)
    ... except ValueError as err:
    ...     print(str(err).split(";")[0].replace(str(d), "D"))
    --output D is the --teacher folder
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def check_model_path(flag: str, name: str) -> None:
    """A missing local model folder is named as such, not as a failed download from the hub."""
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
    if not Path(name).expanduser().exists() and (_offline() or looks_local):
        raise FileNotFoundError(f"{flag} {name}: no such folder. Pass the folder of a saved model" +
                                (", or unset HF_HUB_OFFLINE to download a hub model." if _offline() else "."))


def check_model_folder(flag: str, path: Optional[PathLike], needs: str = "config.json") -> None:
    """A local model folder that exists and holds ``needs`` (nothing to check for None)."""
    if path is None:
        return
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag} {path}: no such folder; pass a local model folder (nothing is downloaded).")
    if needs and not (folder / needs).is_file():
        raise FileNotFoundError(f"{flag} {path}: no {needs} in that folder; pass the folder of a saved "
                                "transformers model.")


def check_input_file(flag: str, path: Optional[PathLike]) -> None:
    """An input file that exists (nothing to check for None)."""
    if path is None:
        return
    file = Path(path).expanduser()
    if file.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; pass a file.")
    if not file.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file.")


def check_data_files(data_dir: PathLike, files: Mapping[str, Optional[str]]) -> None:
    """``--data-dir`` is a folder holding each named file (``{flag: file name or None}``)."""
    data = Path(data_dir).expanduser()
    if not data.is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir}: no such folder; pass the folder of the SQuAD files.")
    for flag, name in files.items():
        if name and not (data / name).is_file():
            raise FileNotFoundError(f"{flag} {name}: no such file in --data-dir {data_dir}.")


def _resolved(path: Any) -> Optional[Path]:
    if path is None:
        return None
    p = Path(path).expanduser()
    return p.resolve() if p.exists() else None


def check_not_an_input(flag: str, output: PathLike, inputs: Mapping[str, Any]) -> None:
    """``output`` is not an input (``{flag: path}``), not inside an input folder and does not contain one."""
    out = Path(output).expanduser().resolve()
    for name, path in inputs.items():
        source = _resolved(path)
        if source is None:
            continue
        folder = source if source.is_dir() else source.parent
        if out == source:
            what = "folder" if source.is_dir() else "file"
            raise ValueError(f"{flag} {output} is the {name} {what}; writing there would replace your input. "
                             f"Choose another {flag}.")
        if source.is_dir() and folder in out.parents:
            raise ValueError(f"{flag} {output} is inside the {name} folder {path}; writing there would mix the "
                             f"output into your input. Choose a {flag} outside it.")
        if out in source.parents:
            raise ValueError(f"{flag} {output} contains the {name} {path}; replacing it would delete that input. "
                             f"Choose another {flag}.")


def _holds_files(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def check_output_folder(flag: str, output: PathLike, inputs: Mapping[str, Any], overwrite: bool,
                        resume: bool = False, marker: Optional[str] = None, legacy: Sequence[str] = (),
                        parts: Sequence[str] = (), manifest: bool = True) -> None:
    """An output folder: not an input (or inside one), replaced only with ``--overwrite`` (or continued with
    ``--resume``) and, for a command that writes a manifest (``manifest``), never holding files we did not write.
    ``parts``: sub-folders a run writes (their contents are what counts); none means ``output`` itself."""
    from .safety import check_output_dir

    check_not_an_input(flag, output, inputs)
    folders = [Path(output) / part for part in parts] or [Path(output)]
    for folder in folders if manifest else ():
        check_output_dir(folder, [p for p in inputs.values() if p and Path(p).expanduser().is_dir()], marker=marker,
                         legacy=legacy)  # input files (a text file beside --output) are not folders to protect
    if not (overwrite or resume) and any(_holds_files(f.expanduser()) for f in folders):
        raise FileExistsError(f"{flag} {output} already holds an earlier output; pass --overwrite to replace it"
                              + (", or --resume to continue its interrupted run." if not resume else "."))


def check_output_file(flag: str, output: PathLike, inputs: Mapping[str, Any], overwrite: bool) -> None:
    """An output file: not a folder, not an input, and replaced only with ``--overwrite``."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {output} is a folder; give a file path such as results.json.")
    check_not_an_input(flag, output, inputs)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{flag} {output} already exists; pass --overwrite to replace it, or choose another "
                              f"{flag}.")
    from .safety import check_writable

    check_writable(path)


#: The weights files Haystack and transformers load from a model folder (not e.g. a Trainer's training_args.bin).
WEIGHT_FILES = ("language_model.bin", "prediction_head_*.bin", "pytorch_model*.bin", "*.safetensors")


def check_weight_files(flag: str, folder: PathLike) -> None:
    """Every weights file of ``folder`` (:data:`WEIGHT_FILES`) is whole and holds only tensors; else a
    ``ValueError`` naming the file and the fix, before any loader reads it.

    torch files are read with ``weights_only=True`` (memory-mapped, so no tensor data is copied): a pickle of
    other objects is refused, never executed. safetensors files must cover the sizes their header promises.
    """
    import pickle
    import warnings
    import zipfile

    root = Path(folder).expanduser()
    for file in sorted({f for pattern in WEIGHT_FILES for f in root.glob(pattern) if f.is_file()}):
        damaged = (f"{flag} {folder}: {file.name} is damaged or truncated ({{:.120}}); re-save the model or "
                   "download it again.")
        if file.suffix == ".safetensors":
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(file), "pt") as handle:
                    handle.keys()
            except (SafetensorError, OSError) as err:
                raise ValueError(damaged.format(" ".join(str(err).split()))) from err
            continue
        import torch

        with open(file, "rb") as handle:
            zipped = handle.read(4) == b"PK\x03\x04"  # torch.save's format since torch 1.6
        if zipped and not zipfile.is_zipfile(file):
            raise ValueError(damaged.format("its zip archive has no end: the file was cut short"))
        try:  # zip files (torch.save's format since 1.6) memory-mapped; older or foreign files read whole
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Detected pickle protocol 4": the refusal below says it all
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=zipped)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{flag} {folder}: {file.name} holds pickled objects that are not tensors, which "
                             "could run code when loaded; it was not loaded. Re-save the model's state dict "
                             "(torch.save(model.state_dict(), ...)) or use safetensors.") from err
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(damaged.format(f"{type(err).__name__}: {' '.join(str(err).split())}")) from err
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{flag} {folder}: {file.name} is not a state dict of tensors (it holds a "
                             f"{type(state).__name__}); re-save the model with save_pretrained or FARMReader.save.")
