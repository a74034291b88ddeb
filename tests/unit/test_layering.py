"""The separation DESIGN.md asks for, read from the imports: the gateway never imports the engine,
the engine never imports the wire protocol, the worker or the gateway, the neutral ``knobs``
module imports neither, and no two modules of the gateway, the worker or the engine import each
other in a cycle (not even for type checking)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "omniserve"


def _imports(path: Path) -> set[str]:
    """Absolute names of the omniserve modules ``path`` imports (TYPE_CHECKING blocks included)."""
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("omniserve")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name.startswith("omniserve"):
                out.add(name)
                out |= {f"{name}.{a.name}" for a in node.names}   # ``from . import ws`` names a module
    return out


def _modules(folder: str) -> dict[str, set[str]]:
    return {".".join(p.relative_to(PKG.parent).with_suffix("").parts): _imports(p)
            for p in (PKG / folder).rglob("*.py")}


@pytest.mark.parametrize("folder,forbidden", [("gateway", "omniserve.engine"), ("engine", "omniserve.protocol"),
                                              ("engine", "omniserve.worker"), ("engine", "omniserve.gateway"),
                                              ("worker", "omniserve.gateway")])
def test_tiers_do_not_import_across(folder, forbidden):
    bad = {m: sorted(i for i in imps if i == forbidden or i.startswith(forbidden + "."))
           for m, imps in _modules(folder).items()}
    assert not {m: i for m, i in bad.items() if i}


def test_knobs_is_neutral():
    assert not {i for i in _imports(PKG / "knobs.py") if i.startswith(("omniserve.engine", "omniserve.protocol",
                                                                        "omniserve.gateway", "omniserve.worker"))}


@pytest.mark.parametrize("folder", ["gateway", "worker", "engine"])
def test_modules_import_no_cycle(folder):
    graph = _modules(folder)
    edges = {m: {i for i in imps if i in graph and i != m} for m, imps in graph.items()}
    seen: dict[str, int] = {}          # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for n in sorted(edges[m]):
            if seen.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in seen:
                visit(n, path + [n])
        seen[m] = 2

    for m in sorted(edges):
        if m not in seen:
            visit(m, [m])
