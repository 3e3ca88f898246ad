"""The package's modules form layers: every import, at the top of a file or inside a function, goes downward,
so no module can reach a module that reaches back to it (docs/architecture.md)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "spatialmix"


def module_imports() -> dict[str, set[str]]:
    """``{module: spatialmix modules it imports}``, read from the source (nothing is imported), counting
    imports inside functions too (a lazy import is still a dependency)."""
    modules = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("spatialmix",) + (parts[:-1] if parts[-1] == "__init__" else parts))
        modules[name] = f
    graph: dict[str, set[str]] = {}
    for name, f in modules.items():
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found |= {c for c in candidates if c in modules and c != name}
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walker_finds_a_cycle_and_the_real_edges():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = module_imports()
    assert "spatialmix.pipeline" in graph["spatialmix.jobs"]  # a top-level import
    assert "spatialmix.integrate" in graph["spatialmix.jobs"]  # an import inside a function
    assert "spatialmix.io._spots" in graph["spatialmix.io.visium_hd"]


def packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between first-level parts (``spatialmix.models.mima`` counts as ``spatialmix.models``)."""
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    out: dict[str, set[str]] = {}
    for m, deps in graph.items():
        out.setdefault(top(m), set()).update(top(d) for d in deps if top(d) != top(m))
    return out


def test_no_import_cycle():
    graph = module_imports()
    found = cycles(graph)
    assert not found, ("modules that import each other (directly or through others); move what the lower one "
                       f"needs further down (docs/architecture.md): {found}")
    found = cycles(packages(graph))
    assert not found, f"subpackages / modules that import each other through their members: {found}"


def test_the_lowest_layers_import_nothing_above_them():
    graph = module_imports()
    assert graph["spatialmix.conventions"] == set()
    assert graph["spatialmix.errors"] <= {"spatialmix.conventions"}
    for low in ("spatialmix.conventions", "spatialmix.errors", "spatialmix.progress", "spatialmix.samples"):
        assert not {m for m in graph[low] if m.startswith("spatialmix.napari")}
    # nothing headless imports the napari layer
    headless = [m for m in graph if not m.startswith("spatialmix.napari") and m != "spatialmix"]
    assert not {(m, d) for m in headless for d in graph[m] if d.startswith("spatialmix.napari")}
