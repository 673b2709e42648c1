"""The structure docs/architecture.md promises, checked on the source itself (ast, no imports).

- No import cycle between the project's modules (the model registry's self-registration is
  the one documented exception).
- A project import inside a function is there only to defer a heavy dependency, and says so
  with a ``# deferred:`` comment on its line or the line above.
- Only ``ecg_dan/run_dir.py`` spells a run directory's file names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ecg_dan", "data_modules")
RUN_DIR_MODULE = "ecg_dan.run_dir"
# A fold's name (``seed42_fold0``) is the split's identity, defined with the split; the
# run-directory module is the only code that turns it into file names.
FOLD_NAME_MODULE = "data_modules.protocol.splits"
# The registry imports the optional architectures so they register themselves; they import
# the registry for its decorator. docs/architecture.md says so.
ALLOWED_CYCLES = [{"ecg_dan.models.registry", "ecg_dan.models.resnet1d", "ecg_dan.models.vae"}]
RUN_DIR_NAMES = ("config.yaml", "run.json", "data.json", "splits.json", "_train.csv", "_surv.npz",
                 "predictions/")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _targets(node: ast.AST, module: str) -> list[str]:
    """Project modules an import statement loads (a ``from pkg import sub`` names ``pkg.sub``
    when ``sub`` is a module)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = module.split(".")
            if not MODULES.get(module, Path()).name == "__init__.py":
                pkg = pkg[:-1]
            pkg = pkg[: len(pkg) - node.level + 1]
            base = ".".join([*pkg, base] if base else pkg)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                 for a in node.names]
    return [n for n in names if n.split(".")[0] in PACKAGES and n in MODULES]


def _imports(module: str) -> list[tuple[str, ast.AST, bool]]:
    """(target, node, inside a function) of every project import of ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    out: list[tuple[str, ast.AST, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((t, child, in_func) for t in _targets(child, module))
            is_func = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, in_func or is_func)

    visit(tree, False)
    return out


def _graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for m in MODULES:
        for target, node, _ in _imports(m):
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            if target != m:
                graph[m].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return comps


def test_the_checker_finds_a_cycle_and_a_clean_graph():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = [sorted(c) for c in _cycles(_graph()) if c not in ALLOWED_CYCLES]
    assert not cycles, f"import cycles: {cycles}"


def _deferred_comment(lines: list[str], node: ast.AST) -> bool:
    here = lines[node.lineno - 1]
    above = lines[node.lineno - 2] if node.lineno >= 2 else ""
    return "# deferred:" in here or above.strip().startswith("# deferred:")


def test_in_function_project_imports_say_what_they_defer():
    bad = []
    for m, path in MODULES.items():
        lines = path.read_text().splitlines()
        for target, node, in_func in _imports(m):
            if in_func and not _deferred_comment(lines, node):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert not bad, ("project imports inside functions without a '# deferred: <heavy "
                     "dependency>' comment:\n" + "\n".join(sorted(set(bad))))


def _strings(tree: ast.AST) -> list[ast.Constant]:
    """String constants that are not docstrings."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


def test_only_the_run_dir_module_names_run_files():
    bad = []
    for m, path in MODULES.items():
        if m == RUN_DIR_MODULE:
            continue
        for node in _strings(ast.parse(path.read_text())):
            s = node.value
            if any(name in s for name in RUN_DIR_NAMES) or s == "predictions" \
                    or (s.startswith("_fold") and m != FOLD_NAME_MODULE):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {s!r}")
    assert not bad, "run-directory file names outside ecg_dan/run_dir.py:\n" + "\n".join(bad)


@pytest.mark.parametrize("source", ['p = "x/splits.json"', "d = 'predictions'",
                                    'n = f"seed{s}_fold{f}"',
                                    'def f():\n    """Doc."""\n    return "run.json"'])
def test_the_file_name_check_sees_names(source):
    tree = ast.parse(source)
    found = [n.value for n in _strings(tree)]
    assert any(any(k in s for k in RUN_DIR_NAMES) or s == "predictions" or s.startswith("_fold")
               for s in found)
