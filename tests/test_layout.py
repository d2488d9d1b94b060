"""The package layout's rules, read from the source (every import, also function-local ones):

* lower layers never import higher ones (sis, models, data ← training, jobs ← experiments,
  analysis ← report, human ← cli);
* no import cycle between modules at module level, and none between sub-packages;
* no private (``_``-prefixed) module or name is imported across sub-packages;
* the package root holds only the modules it should.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "overinterp"

#: sub-package (or root module) → layer; an import must go to the same or a lower layer
LAYER = {
    "_atomic": 0,
    "_locking": 0,
    "_memory": 0,
    "errors": 0,
    "sis": 1,
    "models": 1,
    "data": 1,
    "results": 1,
    "training": 2,
    "jobs": 2,
    "experiments": 3,
    "analysis": 3,
    "report": 4,
    "human": 4,
    "cli": 5,
    "__init__": 6,
    "__main__": 6,
}
ROOT_MODULES = {"__init__.py", "__main__.py", "_atomic.py", "_locking.py", "_memory.py", "errors.py", "results.py"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(path: Path, module: str) -> list[tuple[str, list[str], bool]]:
    """(imported module, names, at module level) for every ``overinterp`` import in ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = pkg[: len(pkg) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "overinterp" or name.startswith("overinterp."):
                found.append((name, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("overinterp"):
                    found.append((a.name, [], id(node) in top))
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.fixture(scope="module")
def graph():
    mods = _modules()
    return mods, {m: _imports(p, m) for m, p in mods.items()}


def test_lower_layers_never_import_higher_ones(graph):
    _, edges = graph
    bad = []
    for mod, imps in edges.items():
        src = _package(mod)
        for name, names, _ in imps:
            targets = [name] if name != "overinterp" else [f"overinterp.{n}" for n in names]
            for t in targets:
                dst = _package(t)
                if dst in LAYER and LAYER[dst] > LAYER.get(src, 6):
                    bad.append(f"{mod} imports {t}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_no_import_cycles(graph):
    mods, edges = graph
    # module-level imports between modules
    adj = {m: {n for n, _, top in imps if top and n in mods and n != m} for m, imps in edges.items()}
    # a package's __init__ importing its own sub-modules is the normal way in; ignore parent → child edges
    adj = {m: {n for n in ns if not n.startswith(m + ".")} for m, ns in adj.items()}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for n in adj.get(m, ()):
            if seen.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in seen:
                visit(n)
        stack.pop()
        seen[m] = 2

    for m in sorted(adj):
        if m not in seen:
            visit(m)
    # between sub-packages, counting function-local imports too
    pk: dict[str, set[str]] = {}
    for m, imps in edges.items():
        for n, names, _ in imps:
            targets = [n] if n != "overinterp" else [f"overinterp.{x}" for x in names]
            for t in targets:
                a, b = _package(m), _package(t)
                if a != b and a not in ("__init__", "__main__") and b in LAYER:
                    pk.setdefault(a, set()).add(b)
    cycles = [f"{a} <-> {b}" for a in pk for b in pk[a] if a < b and a in pk.get(b, set())]
    assert not cycles, "sub-packages importing each other: " + ", ".join(cycles)


#: function-local cycles known and still to be removed (each names who removes it); nothing may join
KNOWN_LOCAL_CYCLES: list[list[str]] = []  # none: a new cycle, function-local ones included, fails the test


def test_no_import_cycles_counting_function_local_imports(graph):
    """No two modules import each other, directly or round a longer loop, where imports inside
    functions count too (a function-local import only hides a cycle until the first call; 0.2 had
    ``jobs.executors`` -> ``jobs.ray_executor`` -> ``jobs.executors``). A package's ``__init__``
    importing its own sub-modules, and imports of the package root, are the normal ways in."""
    mods, edges = graph
    adj = {
        m: {n for n, _, _ in imps if n in mods and n != m and n != "overinterp" and not n.startswith(m + ".")}
        for m, imps in edges.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in adj.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(adj):
        if m not in index:
            strong(m)
    cycles = [c for c in cycles if c not in KNOWN_LOCAL_CYCLES]
    assert not cycles, "modules importing each other (function-local imports counted): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_no_private_name_crosses_sub_packages(graph):
    _, edges = graph
    bad = []
    for mod, imps in edges.items():
        for name, names, _ in imps:
            if _package(name) == _package(mod) or name == "overinterp":
                continue
            # root-level private modules (``_atomic``: atomic writes) are package-wide infrastructure
            if any(part.startswith("_") for part in name.split(".")[2:]):
                bad.append(f"{mod} imports private module {name}")
            bad += [f"{mod} imports private {name}.{n}" for n in names if n.startswith("_")]
    assert not bad, "\n".join(bad)


def test_the_root_holds_little():
    assert {p.name for p in SRC.glob("*.py")} == ROOT_MODULES
    assert {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "sis",
        "models",
        "data",
        "training",
        "jobs",
        "experiments",
        "analysis",
        "report",
        "human",
        "cli",
    }


def test_every_public_name_resolves_and_nothing_else_does():
    """Guards against a name in ``__all__`` that no longer exists (a lazy entry pointing at a moved
    function) and against a module ``__getattr__`` that answers unknown names (a compatibility table
    that silently resolves old names)."""
    import overinterp

    for name in overinterp.__all__:
        assert getattr(overinterp, name) is not None, name
    for gone in ("train_classifier", "read_results", "load_model_spec", "no_such_name"):
        with pytest.raises(AttributeError):
            getattr(overinterp, gone)
    with pytest.raises(ModuleNotFoundError):
        import overinterp.trace  # noqa: F401  (the 0.1 flat layout was never released: no shim)
