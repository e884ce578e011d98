"""Lazy package exports: names load on first use, so importing a light submodule never pulls in Haystack or torch.

Example (in a package ``__init__``):
    >>> __getattr__, __dir__ = lazy_exports("json", {"JSONEncoder": "encoder"})
    >>> __getattr__("JSONEncoder").__name__, __dir__()
    ('JSONEncoder', ['JSONEncoder'])
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(package: str, exports: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``exports`` maps each public name to its submodule."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> List[str]:
        return sorted(exports)

    return __getattr__, __dir__
