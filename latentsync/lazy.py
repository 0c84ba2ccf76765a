"""Lazy package exports (PEP 562): a package names what it offers, and each name's module is imported on first use.

Importing one light module of a package (``latentsync.face.gaps``, ``latentsync.audio.windows``) then does not import
the heavy ones beside it (kornia, Whisper, diffusers), which is what keeps the ComfyUI pack's start-up short.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``package``: ``modules`` maps a relative module name (``.align``) to the
    names it exports; a name's module is imported the first time the name is asked for, and the value is kept in
    the package's namespace."""
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
