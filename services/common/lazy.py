"""Package facades whose names are imported on first use (PEP 562), so `import services.render` stays
cheap (no mediapipe, torch or onnxruntime until a name that needs them is asked for)."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """The facade's module `__getattr__`: `exports` maps each public name to the submodule that defines
    it ("renderer"), or to "submodule.attr" for another name ("align.align"), relative to `package`.
    (No export may share a submodule's name: the submodule would shadow it once imported.)"""
    def __getattr__(name: str) -> Any:
        try:
            where = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module, attr = where.rsplit(".", 1) if "." in where else (where, name)
        return getattr(importlib.import_module(f"{package}.{module}"), attr)

    return __getattr__
