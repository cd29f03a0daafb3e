"""One way to register a plugin, for every family (stage kinds, detectors, secondary models, analytics rules,
alert sinks).

A plugin is a class deriving from its family's base, with a non-empty key class attribute (the word a user
writes in the config: a stage's or a secondary model's `kind`, a detector's, a rule's or a sink's `type`) and,
usually, an `Options` pydantic model. The family finds its plugins in the
modules of one package: a new file there is a new plugin, nothing else to edit. A user's own plugin outside
the tree is named `package.module:Class`.

Modules are imported when a name is looked up (the module named after it first, so that looking up one
stage kind imports that kind alone) or when the whole family is listed (to build an options union, say);
plugin modules therefore keep heavy imports (torch, runtimes, client libraries) inside the code that runs.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Generic, TypeVar

P = TypeVar("P", bound=type)


class Registry(Generic[P]):
    """The plugins of one family: subclasses of `base` whose `key` attribute is set, found in the modules of `package`."""

    def __init__(self, family: str, base: P, package: str, key: str = "name", entry: str | None = None) -> None:
        self.family = family
        self.entry = entry  # a plugin that is a package keeps its class in this submodule (stages/analyze/stage.py)
        self.base = base
        self.package = package
        self.key = key
        self._found: dict[str, P] = {}
        self._discovered = False

    def get(self, name: str) -> P:
        """The plugin called `name`, or `module:Class` (a user's own); ValueError with the known names if none."""
        if ":" in name:
            return self._external(name)
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{self.family} {name!r} is not a name or module:Class")
        if name not in self._found:
            self._import(f"{self.package}.{name}", missing_ok=True)  # the common case: the module is named after it
        if name not in self._found:
            self.discover()
        if name not in self._found:
            names = self.names()
            near = nearest(name, names)
            hint = f"did you mean {near}? " if near else ""
            raise ValueError(f"unknown {self.family} {name!r}; {hint}" + (f"known: {', '.join(names)} (or module:Class)" if names else "none is built in: name yours as module:Class"))
        return self._found[name]

    def all(self) -> dict[str, P]:
        """Every plugin of the package, by name, in the order of their modules' names."""
        self.discover()
        return dict(self._found)

    def names(self) -> list[str]:
        return list(self.all())

    def discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        early, self._found = self._found, {}
        # Sorted, so that the order (of an options union, of the docs) does not depend on what was looked up first.
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                self._import(f"{self.package}.{info.name}")
        for name, cls in early.items():
            self._add(name, cls)
        self._discovered = True

    def _import(self, module_name: str, missing_ok: bool = False) -> None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only the module itself missing means "not here"; a dependency it lacks is a real error.
            if missing_ok and exc.name and module_name.startswith(exc.name):
                return
            raise
        self._scan(module)
        if self.entry and hasattr(module, "__path__"):
            # The package itself imports nothing (its __init__ importing its own modules would be a cycle).
            self._import(f"{module_name}.{self.entry}", missing_ok=True)

    def _scan(self, module: ModuleType) -> None:
        for obj in vars(module).values():
            # Classes of this package only: a module that imports a plugin from elsewhere does not re-register it.
            if self._is_plugin(obj) and obj.__module__.startswith(self.package + "."):
                self._add(getattr(obj, self.key), obj)

    def _add(self, name: str, cls: P) -> None:
        other = self._found.setdefault(name, cls)
        if other is not cls:
            raise ValueError(f"two {self.family} plugins named {name!r}: {_qualname(other)} and {_qualname(cls)}")

    def _is_plugin(self, obj: Any) -> bool:
        return inspect.isclass(obj) and issubclass(obj, self.base) and obj is not self.base and bool(getattr(obj, self.key, ""))

    def _external(self, ref: str) -> P:
        module_name, _, class_name = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise ValueError(f"unknown {self.family} {ref!r} (no module {module_name})") from None
            raise
        cls = getattr(module, class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, self.base)):
            raise ValueError(f"{self.family} {ref!r}: {class_name} is not a {self.base.__name__} class in {module_name}")
        return cls  # type: ignore[return-value]


def nearest(name: str, names: Iterable[str]) -> str | None:
    """The known name closest to a misspelt `name`, for a "did you mean ...?" hint; None when none is close."""
    near = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return near[0] if near else None


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
