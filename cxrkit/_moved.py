"""Old import paths of modules that moved into subpackages, kept working.

cxrkit's modules were flat (``cxrkit.io``, ``cxrkit.transforms``, ...); they
now live in subpackages named by what they hold (``cxrkit.images``,
``cxrkit.models``, ``cxrkit.training``, ``cxrkit.persistence``). So that code
written against the old paths, and pickles that name classes by their old
module (``joblib.dump`` of a fitted classifier), still load, ``import
cxrkit.io`` gives a module that looks names up where they live now, with a
``DeprecationWarning`` that says where to import them from (Python shows
it where a script or a test imports an old path, not where a library
does). ``MOVED_MODULES`` is the one table of old paths.

Why not a file per old path: twenty near-empty modules would bring back the
flat layout they replace; one meta path finder
(``importlib.abc.MetaPathFinder``) and one table keep them in one place.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

__all__ = ["MOVED_MODULES", "install"]

#: Old module -> the modules that hold its names now, searched in order. The
#: first is the one the warning names. Rooms (the subpackage ``__init__``)
#: come first where the old module was public, so the warning points at a
#: public import path.
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    # images: reading, checking, decoding, preprocessing
    "cxrkit.io": ("cxrkit.images", "cxrkit.images._reading"),
    "cxrkit.dicom": ("cxrkit.images", "cxrkit.images._dicom"),
    "cxrkit.data": ("cxrkit.images", "cxrkit.images._folders"),
    "cxrkit.preprocess": ("cxrkit.images", "cxrkit.images._preprocess"),
    "cxrkit.pixels": ("cxrkit.images._pixels",),
    "cxrkit.inputs": ("cxrkit.images._inputs",),
    "cxrkit.cache": ("cxrkit.images", "cxrkit.images._cache"),
    # transforms held three things: augmentation, the input contract, datasets
    "cxrkit.transforms": (
        "cxrkit.training",
        "cxrkit.images",
        "cxrkit.training._augmentation",
    ),
    # networks
    "cxrkit.accelerated": ("cxrkit.models", "cxrkit.models._accelerated"),
    "cxrkit.efficientnet_lite": ("cxrkit.models._efficientnet_lite",),
    "cxrkit.net": ("cxrkit.models._net",),
    "cxrkit.features": ("cxrkit.models._features",),
    # training
    "cxrkit.callbacks": ("cxrkit.training", "cxrkit.training._callbacks"),
    "cxrkit.allocator": ("cxrkit.training", "cxrkit.training._allocator"),
    "cxrkit.checkpoint": ("cxrkit.training._checkpoint",),
    "cxrkit._training": ("cxrkit.training._fit",),
    # model files
    "cxrkit.provenance": ("cxrkit.persistence", "cxrkit.persistence._provenance"),
    "cxrkit.export": ("cxrkit.persistence", "cxrkit.persistence._onnx"),
}


class _MovedModule(types.ModuleType):
    """An old module path: each name is looked up where it lives now."""

    def __init__(self, name: str, homes: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved: import from {homes[0]} instead.")
        self._homes = homes

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        for home in self._homes:
            module = importlib.import_module(home)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(
            f"module {self.__name__!r} (moved to {self._homes[0]}) has no "
            f"attribute {attr!r}"
        )

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for home in self._homes:
            names.update(dir(importlib.import_module(home)))
        return sorted(names)


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of ``MOVED_MODULES`` (and nothing else)."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _MovedModule(spec.name, MOVED_MODULES[spec.name])

    def exec_module(self, module: types.ModuleType) -> None:
        homes = MOVED_MODULES[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {homes[0]}; import from there "
            "(the old path will be removed in a future release)",
            DeprecationWarning,
            stacklevel=2,
        )


def install() -> None:
    """Make the old module paths importable (once; ``import cxrkit`` does it)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
