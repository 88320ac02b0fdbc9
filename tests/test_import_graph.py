"""The project's own modules import each other without circles.

The graph is read from the source with `ast`, never by importing anything. Nodes are the modules
under yolov5/ (the scripts train/val/detect/export, models.*, utils.*; yolov5/ is on sys.path when
they run) and utils_mlu.* (the repository root is on sys.path). An edge A -> B means A's code
imports B, wherever the import statement sits:
- module-level imports run when A is imported;
- imports inside functions (lazy imports) count too: they run on first call, and a circle closed
  by one is still a circle in the design (it just fails later, and only on some paths);
- `import a.b.c` and `from a.b import c` also import the packages `a` and `a.b` (their
  __init__.py runs), and `from a import b` imports the module `a.b` when it is one;
- imports under `if TYPE_CHECKING:` are skipped (they never run);
- `importlib.import_module(<string>)` is not followed: the project uses it only for optional
  third-party modules (torch_mlu) and for names read from pickles.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (directory that is on sys.path, package folders / script folder below it to scan; "**" = with subpackages)
ROOTS = ((REPO / "yolov5", (".", "models", "utils/**")), (REPO, ("utils_mlu",)))


def project_modules(roots=ROOTS):
    """{dotted module name: path} for every scanned .py file (a package's __init__ is the package)."""
    modules = {}
    for base, folders in roots:
        for folder in folders:
            folder, _, deep = folder.partition("/")
            for path in sorted((base / folder).glob("**/*.py" if deep else "*.py")):
                parts = list(path.relative_to(base).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


def _type_checking_block(node):
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(tree):
    """Every Import/ImportFrom in the tree (any depth), except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif _type_checking_block(node):
            stack.extend(node.orelse)  # the else branch does run
        else:
            stack.extend(ast.iter_child_nodes(node))


def _with_parents(name):
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_names(module, path):
    """Dotted names of everything the file's import statements load (packages included)."""
    is_package = path.name == "__init__.py"
    names = []
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names += _with_parents(alias.name)
            continue
        if node.level:  # relative: resolve against the importing module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module
        if base:
            names += _with_parents(base)
        names += [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
    return names


def import_graph(roots=ROOTS):
    """{module: sorted list of project modules it imports}."""
    modules = project_modules(roots)
    return {m: sorted({n for n in imported_names(m, p) if n in modules and n != m}) for m, p in modules.items()}


def import_cycles(graph):
    """One cycle (a list of modules, first == last) per strongly connected component that has one."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(v):  # Tarjan's algorithm; the graph is ~100 nodes, recursion depth is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, c) for c in components]


def _cycle_in(graph, component):
    """A shortest cycle through the component's smallest module (breadth-first inside it)."""
    start = min(component)
    previous, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    path = [v]  # walk back v -> ... -> start, then reverse
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if w in component and w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle found in strongly connected component {sorted(component)}")


def test_project_modules_are_found():
    modules = project_modules()
    for name in ("train", "val", "detect", "export", "models", "models.yolo", "models.experimental",
                 "utils", "utils.io.checkpoint", "utils.datasets", "utils.data.loaders", "utils_mlu.metric"):
        assert name in modules, name
    graph = import_graph()
    assert "models.yolo" in graph["train"] or "models.yolo" in sum((graph[m] for m in graph["train"]), [])
    assert "utils.errors" in graph["utils_mlu.metric"]  # an import inside try/except counts
    assert "utils.data.loaders" in graph["utils.training.trainer"]  # an import inside a method counts


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles in the project:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_cycle_detection_on_a_small_tree(tmp_path):
    _write(tmp_path, {
        "top.py": "import pkg.a\n",
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def f():\n    from . import c\n",  # lazy and relative: still an edge
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import top\nimport pkg.a\n",
        "pkg/d.py": "import pkg.a\nimport os\n",
    })
    graph = import_graph(((tmp_path, (".", "pkg")),))
    assert graph == {"top": ["pkg", "pkg.a"], "pkg": [], "pkg.a": ["pkg", "pkg.b"], "pkg.b": ["pkg", "pkg.c"],
                     "pkg.c": ["pkg", "pkg.a"], "pkg.d": ["pkg", "pkg.a"]}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert import_cycles({"x": ["y"], "y": ["x"], "z": ["z"]}) == [["x", "y", "x"]]  # import_graph drops self-imports
