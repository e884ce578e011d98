"""haystack-distill command line: one sub-command per feature, registered by its own module.

Each module in COMMAND_MODULES exposes ``register(subparsers)`` which adds its parsers and sets ``func`` to a
handler taking the parsed ``argparse.Namespace`` and returning an exit code. Heavy imports (torch, Haystack) happen
inside the handlers, so ``haystack-distill --help`` is instant. The flags every sub-command shares (--output,
--overwrite, --quiet, --json, --device, --learning-rate and their old spellings) are built in cli_options.py.

Every sub-command shows its defaults in ``--help`` and takes ``--config FILE`` (YAML or JSON): the file's keys
are flag names (``learning-rate`` or ``learning_rate``), its values become the defaults, and flags given on the
command line win.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .cli_options import AliasAction, Parser, plain, silence_third_party

DESCRIPTION = "haystack-distill: knowledge distillation for Haystack 1.x readers and sentence-embedding models."
COMMAND_MODULES = (
    "haystack_distill.demo",
    "haystack_distill.reader.cli",
    "haystack_distill.reader.export_cli",
    "haystack_distill.reader.tinybert_cli",
    "haystack_distill.reader.students_cli",
    "haystack_distill.evaluation.cli",
    "haystack_distill.general.cli",
    "haystack_distill.embeddings.cli",
    "augment.cli",
)


def package_version() -> str:
    """The installed version of haystack-distill ("unknown" when run from a checkout that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("haystack-distill")
    except PackageNotFoundError:
        return "unknown (not installed; pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="haystack-distill", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, third-party warnings and tracebacks for errors")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # a feature not installed in this checkout
            if err.name and name.startswith(err.name):
                continue
            raise
        module.register(subparsers)
    for sub in subparsers.choices.values():
        _add_common_options(sub)
    for choice in subparsers._choices_actions:  # the one-line help of each sub-command in the top-level --help
        choice.help = plain(choice.help)
    return parser


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default after its help, except for required flags and help that states its default;
    keeps the paragraphs and list items of a description."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        if action.required or re.search(r"\bdefault\b", text, re.IGNORECASE):
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        blocks = []
        for block in re.split(r"\n\s*\n", text.strip()):
            items = re.split(r"\n(?=\s*(?:\d+\.|-) )", block)  # a numbered or dashed item starts a line
            blocks.append("\n".join(fill(item, width, indent) for item in items))
        return "\n\n".join(blocks)


def _add_common_options(sub: argparse.ArgumentParser) -> None:
    """``--debug`` and ``--verbose`` also after the sub-command, ``--config``, defaults shown in every flag's
    help, and help texts in plain words (no reStructuredText markup)."""
    if "--debug" not in sub._option_string_actions:
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the traceback of an error")
    if "--verbose" not in sub._option_string_actions:
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="debug logging, third-party warnings and tracebacks for errors")
    if "--config" not in sub._option_string_actions:
        sub.add_argument("--config", metavar="FILE", help="YAML or JSON file of flag values (keys: flag names); "
                                                          "flags on the command line win")
    sub.formatter_class = DefaultsHelpFormatter
    sub.description = plain(sub.description)
    for action in sub._actions:
        if action.help is None:  # ArgumentDefaultsHelpFormatter shows the default only beside some help text
            action.help = action.dest.replace("_", " ")
        action.help = plain(action.help)
    for group in sub._action_groups:
        group.title, group.description = plain(group.title), plain(group.description)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def load_config(path: str) -> Dict[str, Any]:
    """The mapping in a ``.json``, ``.yaml`` or ``.yml`` file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"--config {path}: no such file.")
    suffix = file.suffix.lower()
    text = file.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"--config {path} is not valid JSON: {err}") from err
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ImportError(f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); or write the "
                              "file as JSON.") from err
        if any(isinstance(token, yaml.AliasToken) for token in yaml.scan(text)):  # nested aliases can expand to GBs
            raise ValueError(f"--config {path}: YAML aliases (*name) are not supported; write the values out.")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"--config {path} is not valid YAML: {one_line(err)}") from err
    else:
        raise ValueError(f"--config {path}: unknown format {suffix or '(no suffix)'}; use .json, .yaml or .yml.")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a mapping of flag names to values, got {type(data).__name__}.")
    return data


NOT_CONFIGURABLE = ("help", "version", "config", "debug", "verbose")


def _config_actions(sub: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """Config key (flag name with underscores) -> action, for every flag a config file may set."""
    keys: Dict[str, argparse.Action] = {}
    for action in sub._actions:
        if action.dest in NOT_CONFIGURABLE or not action.option_strings:
            continue
        for option in action.option_strings:
            if option.startswith("--"):
                keys[option[2:].replace("-", "_")] = action
        keys.setdefault(action.dest, action)
    return keys


def _config_value(key: str, value: Any, action: argparse.Action, path: str) -> Any:
    """``value`` converted as argparse would convert the flag's text; ValueError naming the key otherwise."""
    where = f"--config {path}: {key}"
    if action.nargs == 0:  # store_true / store_false, or an old switch such as cpu: true (= device: cpu)
        if not isinstance(value, bool):
            raise ValueError(f"{where} is a switch; give true or false, got {value!r}.")
        if isinstance(action, AliasAction):
            if not value:
                raise ValueError(f"{where}: false has no meaning; leave the key out (or use {action.new}).")
            return action.const
        return value
    if value is None:
        if action.required or action.default is not None:
            keep = "it is required" if action.required else f"its default is {action.default!r}"
            raise ValueError(f"{where}: null is not a value; give one or leave the key out ({keep}).")
        return None
    many = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
    if many:
        return [_convert(where, v, action) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, list):  # e.g. keep: [0, 2, 5] for --keep 0,2,5
        value = ",".join(str(v) for v in value)
    return _convert(where, value, action)


def _convert(where: str, value: Any, action: argparse.Action) -> Any:
    if isinstance(value, (dict, list, bool)):
        raise ValueError(f"{where}: expected a single value, got {value!r}.")
    if not callable(action.type):  # no type (argparse's registered type names are not used here)
        value = str(value)
    else:
        try:
            value = action.type(str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: {value!r} is not valid ({err}).") from err
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}.")
    return value


class _AppendReplacingConfig(argparse._AppendAction):
    """``action="append"`` whose first use on the command line replaces the config's list instead of extending it."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, None)
        super().__call__(parser, namespace, values, option_string)


def apply_config(sub: argparse.ArgumentParser, command: str, path: str) -> None:
    """Make the values in config file ``path`` the defaults of sub-command parser ``sub``."""
    actions = _config_actions(sub)
    values: Dict[str, Any] = {}
    for key, value in load_config(path).items():
        action = actions.get(str(key).lstrip("-").replace("-", "_"))
        if action is None:
            valid = ", ".join(sorted({a.option_strings[-1].lstrip("-") for a in actions.values()
                                      if a.help is not argparse.SUPPRESS}))
            raise ValueError(f"--config {path}: unknown key {key!r} for {command}; valid keys: {valid}.")
        values[action.dest] = _config_value(str(key), value, action, path)
    sub.set_defaults(**values)
    for action in sub._actions:
        if action.dest in values:
            action.required = False
            if type(action) is argparse._AppendAction:
                action.__class__ = _AppendReplacingConfig
    for group in sub._mutually_exclusive_groups:
        if any(a.dest in values for a in group._group_actions):
            group.required = False


def _find_config(parser: argparse.ArgumentParser, argv: List[str]) -> Optional[tuple]:
    """(sub-command name, its parser, config path) when ``argv`` passes ``--config`` to a sub-command."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for index, token in enumerate(argv):
        if token in subparsers.choices:
            pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
            pre.add_argument("--config")
            path = pre.parse_known_args(argv[index + 1:])[0].config
            return (token, subparsers.choices[token], path) if path else None
        if not token.startswith("-"):
            return None
    return None


#: Bad input (arguments, files, models, folders, checkpoints): one line on stderr and exit code 2.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError)


def one_line(err: BaseException) -> str:
    """The error's message on one line (Hugging Face's messages span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def run_command(args: argparse.Namespace) -> int:
    """Run the sub-command; errors print one line (exit 2 for bad input, 1 for a diverged run) unless
    ``--debug``/``--verbose`` asks for the traceback."""
    from .safety import DivergenceError

    try:
        if all(hasattr(args, name) for name in ("max_seq_len", "doc_stride", "max_query_length")):
            from .reader.data import check_windows

            check_windows(args.max_seq_len, args.doc_stride, args.max_query_length)
        return int(args.func(args) or 0)
    except (DivergenceError, *USER_ERRORS) as err:
        if args.verbose or getattr(args, "debug", False):
            raise
        print(f"haystack-distill {args.command}: error: {one_line(err)} (--debug shows the traceback)",
              file=sys.stderr)
        return 1 if isinstance(err, DivergenceError) else 2


def offline_by_default() -> None:
    """No Hub access at run time (every model is a local folder): ``HF_HUB_OFFLINE=1`` and
    ``TRANSFORMERS_OFFLINE=1`` unless already set (``HF_HUB_OFFLINE=0`` lets a command download a Hub model).
    Called before huggingface_hub is imported, which reads them once."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")


def main(argv: Optional[List[str]] = None) -> int:
    offline_by_default()
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    found = _find_config(parser, argv)
    if found is not None:
        command, sub, path = found
        try:
            apply_config(sub, command, path)
        except USER_ERRORS as err:
            print(f"haystack-distill {command}: error: {one_line(err)}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    silence_third_party(args.verbose)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,  # libraries' (Haystack's) INFO logs: --verbose
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        quiet = getattr(args, "quiet", False)
        for name in ("haystack_distill", "augment"):  # our own INFO messages stay on, unless --quiet
            logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)
        # transformers' "Some weights ... were not initialized" on every fresh QA head (read when it is imported)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
