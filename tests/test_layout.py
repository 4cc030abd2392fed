"""The house's structure, as tools read it: every package folder is installed, imports
inside the package are relative and at module level (no circle dodged inside a
function), and no import circle exists."""

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"tests", "benchmarks", "docs", "build", ".git", ".ci"}
ENTRY = "launch.py"
"""The console entry imports the CLI late on purpose (it may re-execute itself with a
faster allocator before JAX loads)."""


def package_files():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if not SKIP & set(rel.parts) and "egg-info" not in str(rel):
            yield rel


def module_of(rel: Path) -> str:
    parts = ["sparsefield", *rel.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(rel: Path):
    """``(target module, line, inside a function)`` for each package import of ``rel``."""
    tree = ast.parse((ROOT / rel).read_text())
    funcs = [(n.lineno, n.end_lineno) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    base = module_of(rel).split(".")
    base = base if rel.name == "__init__.py" else base[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            anchor = base[: len(base) - node.level + 1]
            target = ".".join(anchor + ([node.module] if node.module else []))
            inside = any(a < node.lineno <= b for a, b in funcs)
            for alias in node.names:
                yield f"{target}.{alias.name}" if not node.module else target, node.lineno, inside
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] == "sparsefield":
                    yield name, node.lineno, None  # absolute


def test_every_package_folder_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    folders = {module_of(rel) for rel in package_files() if rel.name == "__init__.py"} | {"sparsefield"}
    assert folders == listed


def test_imports_are_relative_and_at_module_level():
    bad = []
    for rel in package_files():
        for target, line, inside in imports(rel):
            if inside is None:
                bad.append(f"{rel}:{line} absolute import of {target}")
            elif inside and rel.name != ENTRY:
                bad.append(f"{rel}:{line} imports {target} inside a function")
    assert bad == []


def test_no_import_circles():
    modules = {module_of(rel): rel for rel in package_files()}

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {m: {resolve(t) for t, _, inside in imports(rel) if not inside} - {m, ""} for m, rel in modules.items()}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", " -> ".join(path + [m])
        state[m] = "open"
        for n in graph[m]:
            visit(n, path + [m])
        state[m] = "done"

    for m in graph:
        visit(m, [])
