"""The runtime never depends on the offline tools: no module under stages/ or pipeline/ imports `tools`, so a
pipeline process cannot load training, conversion or evaluation code (nor what they import)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.procs import ROOT

RUNTIME = ("pipeline", "stages")


def imports_of_tools(path: Path) -> list[tuple[int, str]]:
    """(line, imported name) of every import of the tools package in one module, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__"):
            names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        else:
            continue
        found += [(node.lineno, name) for name in names if name == "tools" or name.startswith("tools.")]
    return sorted(found)


def test_runtime_packages_do_not_import_tools() -> None:
    modules = [p for pkg in RUNTIME for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(modules) > 20, "the runtime packages were not found"
    offending = [f"{p.relative_to(ROOT)}:{line}: imports {name}" for p in modules for line, name in imports_of_tools(p)]
    assert not offending, "runtime code must not depend on the offline tools:\n" + "\n".join(offending)


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import tools\nfrom tools.synthetic import make_sequence\n\n\ndef f():\n    import tools.tracklets as t\n"
        "    importlib.import_module('tools.convert_ssd')\n\n\nimport toolsmith\nfrom . import tools\n"
    )
    assert imports_of_tools(probe) == [(1, "tools"), (2, "tools.synthetic"), (6, "tools.tracklets"), (7, "tools.convert_ssd")]
