"""The one convention of every haystack-distill sub-command, in one place (no heavy imports).

- Flag builders: --output, --overwrite, --resume, --quiet, --json, --device, --learning-rate. Each keeps the old
  spellings as hidden aliases (:func:`add_alias`); a deprecated alias prints a one-line hint to stderr.
- :class:`Parser`: argparse that accepts a required flag given through one of its aliases.
- :func:`print_result`: a readable table by default, JSON with --json.
- :func:`status`: a one-line status on stderr before a step that takes more than a few seconds.
- :func:`silence_third_party`: drops the known harmless warnings of Haystack and onnxruntime unless --verbose.

Example:
    >>> p = Parser(prog="demo-cli")
    >>> _ = add_output(p, "new folder for the model", aliases=("--save-dir",), deprecated=False)
    >>> p.parse_args(["--save-dir", "out"]).output
    'out'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import sys
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

_MISSING = object()


class AliasAction(argparse.Action):
    """A hidden old spelling of a flag: it stores into the flag's ``dest`` (``const`` for a switch such as --cpu)
    and, when ``deprecated``, prints one line naming the new spelling."""

    def __init__(self, option_strings: List[str], dest: str, target: argparse.Action, new: str,
                 deprecated: bool = True, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.target, self.new, self.deprecated = target, new, deprecated

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        if self.deprecated:
            print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}.", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_alias(parser: Any, target: argparse.Action, *names: str, const: Any = _MISSING, new: Optional[str] = None,
              deprecated: bool = True) -> None:
    """Register ``names`` as hidden spellings of ``target``; with ``const`` they are switches storing it."""
    if not names:
        return
    switch = const is not _MISSING or target.nargs == 0
    value = target.const if const is _MISSING else const
    kwargs: Dict[str, Any] = {"nargs": 0, "const": value} if switch else {"type": target.type,
                                                                        "choices": target.choices,
                                                                        "metavar": target.metavar}
    parser.add_argument(*names, dest=target.dest, action=AliasAction, target=target,
                        new=new or target.option_strings[-1], deprecated=deprecated, **kwargs)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose required flags may also be given through a hidden alias (e.g. --save-dir for
    --output); the error for a missing one names the flag, never the alias."""

    def parse_known_args(self, args: Optional[Sequence[str]] = None,  # type: ignore[override]
                         namespace: Optional[argparse.Namespace] = None) -> Any:
        aliased = {a.target for a in self._actions if isinstance(a, AliasAction) and a.target.required}
        for action in aliased:
            action.required = False
        try:
            parsed, extras = super().parse_known_args(args, namespace)
        finally:
            for action in aliased:
                action.required = True
        missing = [a.option_strings[-1] for a in self._actions
                   if a in aliased and getattr(parsed, a.dest, None) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        return parsed, extras


# -------------------------------------------------------------------------------------------------- flag builders
def add_output(parser: Any, help: str, required: bool = True, aliases: Iterable[str] = (),
               metavar: Optional[str] = None, deprecated: bool = True) -> argparse.Action:
    """``--output PATH``: where the sub-command writes; ``aliases`` are older spellings (hidden)."""
    action = parser.add_argument("--output", required=required, metavar=metavar, help=help)
    add_alias(parser, action, *aliases, deprecated=deprecated)
    return action


def add_overwrite(parser: Any, what: str = "an existing --output (a previous output of this command)") -> None:
    """``--overwrite``: the one switch that lets a sub-command replace what an earlier run wrote."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def add_quiet(parser: Any, aliases: Iterable[str] = (), deprecated: bool = True) -> None:
    """``--quiet``: no progress bars and no status lines (errors and results are still printed)."""
    action = parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    add_alias(parser, action, *aliases, deprecated=deprecated)


def add_json(parser: Any) -> None:
    """``--json``: print the results as JSON instead of a table."""
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def add_learning_rate(parser: Any, default: float, help: str = "AdamW peak learning rate",
                      aliases: Iterable[str] = ("--lr",), deprecated: bool = True, **kwargs: Any) -> argparse.Action:
    """``--learning-rate``; ``--lr`` stays a hidden alias."""
    action = parser.add_argument("--learning-rate", type=kwargs.pop("type", float), default=default, help=help,
                                 **kwargs)
    add_alias(parser, action, *aliases, deprecated=deprecated)
    return action


DEVICE_HELP = "auto (a GPU when there is one), cpu, cuda, cuda:N or mps"


def device_name(text: str) -> str:
    """argparse type of --device.

    Example:
        >>> device_name("cuda:1"), device_name("CPU")
        ('cuda:1', 'cpu')
    """
    value = text.strip().lower()
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use {DEVICE_HELP}")
    return value


def add_device(parser: Any, default: str = "auto", old_switches: bool = False, help: str = "") -> None:
    """``--device``; with ``old_switches`` the hidden deprecated --cpu (= --device cpu) and --gpu (= auto)."""
    action = parser.add_argument("--device", type=device_name, default=default,
                                 help=help or f"where the models run: {DEVICE_HELP}")
    if old_switches:
        add_alias(parser, action, "--cpu", const="cpu", new="--device cpu")
        add_alias(parser, action, "--gpu", const="auto", new="--device auto")


def torch_device(name: str) -> Optional[str]:
    """The torch device of a --device value; None for auto (the library's choice: a GPU when present)."""
    return None if name == "auto" else name


def add_reader_windows(parser: Any) -> None:
    """--max-seq-len, --doc-stride and --max-query-length: how a reader cuts questions and contexts."""
    from .cli import positive_int

    parser.add_argument("--max-seq-len", type=positive_int, default=256, help="tokens per window (feature)")
    parser.add_argument("--doc-stride", type=positive_int, default=128, help="overlap of a long context's windows")
    parser.add_argument("--max-query-length", type=positive_int, default=64, help="question tokens kept")


# ---------------------------------------------------------------------------------------------------- results
def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def flatten(result: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested dicts as one level with dotted keys.

    Example:
        >>> flatten({"a": 1, "b": {"c": 2.0}})
        {'a': 1, 'b.c': 2.0}
    """
    flat: Dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def format_table(result: Any) -> str:
    """A dict as ``name  value`` lines; a list of dicts as columns (the keys of the first row).

    Example:
        >>> print(format_table([{"model": "a", "f1": 71.234}, {"model": "bb", "f1": 8.5}]))
        model  f1
        a      71.23
        bb     8.5
    """
    if isinstance(result, dict):
        flat = flatten(result)
        width = max((len(k) for k in flat), default=0)
        return "\n".join(f"{key:<{width}}  {_cell(value)}" for key, value in flat.items())
    rows = [flatten(row) for row in result]
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    cells = [keys] + [[_cell(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def print_result(result: Any, as_json: bool, table: Optional[str] = None) -> None:
    """Print ``result`` as JSON (``as_json``) or as a table (``table`` if given, else :func:`format_table`)."""
    if as_json:
        from .io import strict_json

        print(json.dumps(strict_json(result), indent=2, default=str, allow_nan=False))
    else:
        print(table if table is not None else format_table(result))


# ------------------------------------------------------------------------------------------------- status, noise
@contextlib.contextmanager
def status(message: str, quiet: bool = False) -> Iterator[None]:
    """One line on stderr (``message ...``) before a step that takes more than a few seconds; none with
    ``quiet``."""
    if not quiet:
        print(f"{message} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    logging.getLogger("haystack_distill").debug("%s: %.1f s", message, time.perf_counter() - started)


#: (logger name, start of the message): harmless third-party warnings hidden unless --verbose.
NOISE = (
    # Haystack passes its own bookkeeping fields back to the QA head on every load of a saved reader
    ("haystack.modeling.model.prediction_head", "Some unused parameters are passed to the QuestionAnsweringHead"),
    # onnxruntime asks for shape pre-processing, which dynamic int8 weight quantization does not need
    ("root", "Please consider to run pre-processing before quantization"),
    ("root", "Please consider pre-processing before quantization"),
)


class NoiseFilter(logging.Filter):
    """Drops the records listed in :data:`NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(record.name == name and message.startswith(start) for name, start in NOISE)


_NOISE_FILTER = NoiseFilter()


def silence_third_party(verbose: bool) -> None:
    """Hide the :data:`NOISE` warnings (a filter on their loggers) unless ``verbose``; idempotent."""
    for name in {name for name, _ in NOISE}:
        logger = logging.getLogger() if name == "root" else logging.getLogger(name)
        logger.removeFilter(_NOISE_FILTER)
        if not verbose:
            logger.addFilter(_NOISE_FILTER)


# ------------------------------------------------------------------------------------------------------ help text
_ROLE = re.compile(r":(?:mod|func|meth|class|data|attr|obj|exc):`~?([^`]+)`")


def plain(text: Optional[str]) -> Optional[str]:
    """Help text without reStructuredText markup.

    Example:
        >>> plain("see :func:`~haystack_distill.general.distil_general` and ``--keep``")
        'see distil_general and --keep'
    """
    if not text:
        return text
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).count("~") else m.group(1), text)
    return text.replace("``", "").replace("::", ":")
