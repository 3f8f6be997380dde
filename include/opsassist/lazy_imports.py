"""Defer a package's ``__init__`` until one of its own attributes is used.

LanceDB imports the Lance namespace REST client (``lance_namespace_urllib3_client``: an OpenAPI
client whose ``__init__`` loads nine API classes and their request models) when it is imported,
although a local embedded index never calls it: that ``__init__`` was about a third of a cold
``opsassist search`` on 2 busy cores (0.3-0.6 s; ``benchmarks/cli_cold_start.py``).
:func:`defer_package_init` makes such a package's module object exist without running its
``__init__``; its submodules import as usual (``from pkg.models import X`` loads only that
module), and the first lookup of an attribute the package itself defines (``pkg.ApiClient``,
``from pkg import ApiClient``) runs the real ``__init__`` then, so nothing behaves differently
except when the work is done. Used by the CLI's search only; a long-lived process gains nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any


class _DeferredInit(importlib.abc.Loader):
    """Creates the package module; its ``__init__`` runs at the first missing attribute."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real
        self._lock = threading.RLock()

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module, __path__ set from the spec: submodules import

    def exec_module(self, module: ModuleType) -> None:
        real, lock = self.real, self._lock

        def __getattr__(name: str) -> Any:  # the module-level hook (PEP 562)
            with lock:
                if module.__dict__.get("__getattr__") is __getattr__:
                    del module.__dict__["__getattr__"]
                    real.exec_module(module)  # the package's own __init__, once
            try:
                return module.__dict__[name]
            except KeyError:
                message = f"module {module.__name__!r} has no attribute {name!r}"
                raise AttributeError(message) from None

        module.__dict__["__getattr__"] = __getattr__


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        self.names.discard(fullname)
        if not self.names and self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec  # not a package found on the path: imported as usual
        spec.loader = _DeferredInit(spec.loader)
        return spec


def defer_package_init(*names: str) -> None:
    """Defer the ``__init__`` of these top-level packages (those not imported yet)."""
    pending = [name for name in names if name not in sys.modules]
    if pending:
        sys.meta_path.insert(0, _Finder(pending))
