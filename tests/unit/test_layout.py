"""The layout (docs/layout.md): no import cycle between any two modules, and no package holding
more than a third of the code directly (the floors themselves are `make lint`'s
lint-imports contracts in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import grimp

import mlops_assets

ROOT = Path(mlops_assets.__file__).parent


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    adjacency = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                component.append(w)
            on_stack.discard(v)
            if component:
                found.append(sorted([v, *component]))

    for module in sorted(adjacency):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_back():
    assert _cycles(grimp.build_graph("mlops_assets")) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("from cyclic import c\n")
    (package / "c.py").write_text("import cyclic.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("cyclic")) == [["cyclic.a", "cyclic.b", "cyclic.c"]]


def test_no_package_holds_more_than_a_third_of_the_code():
    lines = {p: len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    total = sum(lines.values())
    direct: dict[Path, int] = {}
    for path, count in lines.items():
        direct[path.parent] = direct.get(path.parent, 0) + count
    heavy = {str(d.relative_to(ROOT.parent)): n for d, n in direct.items() if n > total / 3}
    assert heavy == {}, f"of {total} lines: {heavy}"
