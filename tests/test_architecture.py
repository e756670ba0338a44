"""The layout's rules, checked on the source: no import cycles between specrnn's modules (imports inside functions
count too), no module importing another's private names, small modules, and the task choice made in tasks/ only."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "specrnn"
MAX_LINES = 350


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str]]:
    """(imported specrnn module, imported name) for every import in the module, at any depth."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            if not target.startswith("specrnn"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "") if sub in MODULES else (target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("specrnn")]
    return [(m, n) for m, n in found if m in MODULES]


def _graph() -> dict[str, set[str]]:
    graph = {}
    for m in MODULES:
        deps = {t for t, _ in _imports(m)}
        # importing a.b.c runs a/__init__ and a/b/__init__ too; the package init re-exporting its modules is not a cycle
        graph[m] = {d for d in deps if d != m and not m.startswith(d + ".")}
    return graph


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_imports_across_modules():
    bad = [f"{m} imports {t}.{n}" for m in MODULES for t, n in _imports(m) if n.startswith("_") and not n.startswith("__") and t != m]
    assert not bad, "\n".join(bad)


def test_task_choice_lives_in_tasks():
    bad = []
    for m, path in MODULES.items():
        if m.startswith("specrnn.tasks") or m == "specrnn.config":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if 'head == "ctc"' in line or 'head != "ctc"' in line:
                bad.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not bad, "ask the task (tasks/), not the head:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[module].relative_to(SRC)} has {n} lines (at most {MAX_LINES})"
