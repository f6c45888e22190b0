"""The shape of the code: light modules stay light, no import cycles, short files and functions."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geodemo", "training")
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 120


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The project modules one import statement loads (``from pkg import mod`` loads ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against this module's package
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [f"{target}.{alias.name}" for alias in node.names]
    return [name for name in names if name in known] or [target]


def module_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file (functions included), by ast."""
    files = {_module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    known = set(files)
    graph = {}
    for module, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(node, module, path.name == "__init__.py", known):
                    # `import a.b.c` loads a.b.c; keep the longest project module it names
                    while target and target not in known:
                        target = target.rpartition(".")[0]
                    if target and target != module:
                        edges.add(target)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _product_files() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))] + [ROOT / "app.py"]


@pytest.mark.parametrize("module", ["geodemo.data", "geodemo.jobs", "geodemo.jobform"])
def test_light_modules_load_neither_torch_nor_lightning(module):
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted(m for m in ('torch', 'lightning', 'gradio') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], f"import {module} loads {done.stdout}"


def test_the_cycle_finder_sees_a_lazy_import_cycle(tmp_path):
    """A cycle closed only by an import inside a function counts (the kind geodemo once had)."""
    (tmp_path / "geodemo").mkdir()
    (tmp_path / "geodemo" / "__init__.py").write_text("")
    (tmp_path / "geodemo" / "a.py").write_text("from geodemo import b\n")
    (tmp_path / "geodemo" / "b.py").write_text("def f():\n    from geodemo.a import x\n")
    (tmp_path / "geodemo" / "c.py").write_text("from . import a\n")
    assert find_cycles(module_graph(tmp_path, ["geodemo"])) == [["geodemo.a", "geodemo.b"]]


def test_no_import_cycles():
    graph = module_graph(ROOT)
    assert "geodemo.data" in graph and graph["training.fit"], "the graph missed the project's modules"
    assert find_cycles(graph) == []


def test_geodemo_never_imports_training_or_lightning():
    for path in sorted((ROOT / "geodemo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            assert not {"training", "lightning"} & set(roots), f"{path.relative_to(ROOT)}:{node.lineno}"


def test_product_files_and_functions_are_short():
    long_files, long_functions = [], []
    for path in _product_files():
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{name} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_training_from_folders_needs_no_litdata():
    """litdata (chunks, object storage) is a development/scale extra: the runtime set trains without it."""
    code = ("import sys; import training.fit, training.__main__, training.datamodule, geodemo.ui; "
            "print('litdata' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
