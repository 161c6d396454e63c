"""The house rules that can be checked statically: no import cycle between toolkit modules, packages import only
downwards (LAYERS), no import of another package's private name, one owner for the artifact dir, one percentile
definition, one model source.

Every import statement in every module of toolkit/ counts, function-local (lazy) imports included: a lazy import
still runs the module when called, so a cycle through one is a cycle. `from P import X` depends on P.X when X is a
module, and always on P itself (its `__init__` runs first). The implicit import of a module's parent packages is
not counted (otherwise every package whose `__init__` imports its modules would be a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "toolkit"

# Bottom first: a package may import only packages in earlier rows (and its own modules). ARCHITECTURE.md draws it.
LAYERS = [
    ("toolkit", "toolkit.errors", "toolkit.rows", "toolkit.reporter"),
    ("toolkit.io", "toolkit.metrics"),
    ("toolkit.checks",),
    ("toolkit.data",),
    ("toolkit.models",),
    ("toolkit.gate", "toolkit.rundir"),
    ("toolkit.train",),
    ("toolkit.exporters",),
    ("toolkit.bench",),
    ("toolkit.device",),
    ("toolkit.pipeline",),
    ("toolkit.cli",),
    ("toolkit.__main__",),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _absolute(m: str, p: Path, node: ast.ImportFrom) -> str:
    """The module a (possibly relative) `from ... import` names."""
    if node.level == 0:
        return node.module or ""
    base = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mods):
    """module -> toolkit modules it imports (top-level or inside functions), and (module, from, private name)."""
    edges, private = {m: set() for m in mods}, []
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = _absolute(m, p, node)
                if not module.startswith("toolkit"):
                    continue
                if module in mods and module != m:
                    edges[m].add(module)
                for a in node.names:
                    full = f"{module}.{a.name}"
                    target = full if full in mods else module
                    if target in mods and target != m:
                        edges[m].add(target)
                    same_pkg = module.split(".")[:2] == m.split(".")[:2]
                    if a.name.startswith("_") and not a.name.startswith("__") and not same_pkg:
                        private.append((m, module, a.name))
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name in mods and a.name != m)
    return edges, private


def _cycles(edges) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def _package(m: str) -> str:
    return ".".join(m.split(".")[:2])


def test_the_checker_sees_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_and_no_private_imports_across_packages():
    edges, private = _imports(_modules())
    assert _cycles(edges) == []
    assert private == []


def test_packages_import_only_downwards():
    edges, _ = _imports(_modules())
    rank = {pkg: i for i, row in enumerate(LAYERS) for pkg in row}
    assert sorted({_package(m) for m in edges} - set(rank)) == [], "a new package: give it a row in LAYERS"
    upwards = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                     if _package(m) != _package(t) and rank[_package(t)] >= rank[_package(m)])
    assert upwards == []


def _defs(name: str, _cache: dict = {}) -> list[str]:  # noqa: B006 - a deliberate memo
    if not _cache:
        for m, p in _modules().items():
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    _cache.setdefault(node.name, []).append(m)
    return _cache.get(name, [])


def test_one_implementation_each():
    assert _defs("read_manifest") == ["toolkit.exporters.manifest"]
    assert _defs("load_test_vectors") == ["toolkit.exporters.manifest"]
    assert _defs("save_test_vectors") == ["toolkit.exporters.manifest"]
    assert _defs("latency_summary") == ["toolkit.rows"]
    assert _defs("ModelSource") == ["toolkit.exporters.sources"]
    assert _defs("fresh") == ["toolkit.exporters.sources"]
    assert _defs("from_run") == ["toolkit.exporters.sources"]
    for m, p in _modules().items():  # nobody else opens manifest.json or computes percentiles for rows
        text = p.read_text()
        if m != "toolkit.exporters.manifest":
            assert '"manifest.json"' not in text, m
        if m.startswith(("toolkit.bench", "toolkit.device")):
            assert "percentile" not in text.replace("percentiles", "").replace("percentile definition", ""), m


def test_models_sit_below_the_exporters():
    """The contract is the models' vocabulary (toolkit.models.contract): models import no later stage."""
    edges, _ = _imports(_modules())
    later = ("toolkit.exporters", "toolkit.bench", "toolkit.device", "toolkit.cli")
    bad = {m: sorted(t for t in ts if t.startswith(later)) for m, ts in edges.items() if m.startswith("toolkit.models")}
    assert {m: ts for m, ts in bad.items() if ts} == {}


CLI_FUNCTION_LINES = 60


def test_cli_functions_are_short():
    """A cli file parses flags, calls one library function and prints: a long function there holds decisions that
    belong in the library. Counted from `def` to its last line, signature included."""
    long = {}
    for p in sorted((ROOT / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > CLI_FUNCTION_LINES:
                    long[f"{p.relative_to(ROOT.parent).as_posix()}:{node.name}"] = n
    assert long == {}


def _draws(source: str) -> list[str]:
    """What in `source` draws on the terminal itself: an import of rich (any part), a call of print()."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "rich":
            out.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "rich" for a in node.names):
            out.append(f"{node.lineno}: import rich")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            out.append(f"{node.lineno}: print()")
    return out


def test_the_draw_check_sees_rich_and_print():
    assert _draws("from rich.console import Console") and _draws("import rich.progress") and _draws("print(1)")
    assert _draws("def f():\n    from rich.table import Table")
    assert not _draws("SCRIPT = 'print(1)'") and not _draws("console.print(1)") and not _draws("import richer")


def test_only_the_cli_draws():
    """Library code returns values and reports through the callbacks and the toolkit.reporter.Reporter it is handed;
    only toolkit/cli/ draws on the terminal (console, progress bars, tables, markup)."""
    found = {m: _draws(p.read_text()) for m, p in _modules().items() if m != "toolkit.cli"
             and not m.startswith("toolkit.cli.")}
    assert {m: d for m, d in found.items() if d} == {}
