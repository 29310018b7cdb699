"""The code's shape: nothing in worker/ depends on tasks/, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

from worker.app import TASK_MODULES

ROOT = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("worker", "tasks", "schemas"):
        for path in (ROOT / top).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module this one imports, at module level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def test_no_module_in_worker_imports_the_task_entry_points():
    known = _modules()
    offenders = {name: sorted(i for i in _imports(path, known) if i == "tasks" or i.startswith("tasks."))
                 for name, path in known.items() if name.startswith("worker")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_there_is_no_import_cycle():
    known = _modules()
    graph = {name: _imports(path, known) - {name} for name, path in known.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_app_names_every_task_module():
    on_disk = sorted(f"tasks.{p.stem}" for p in (ROOT / "tasks").glob("*.py") if p.stem != "__init__")
    assert sorted(TASK_MODULES) == on_disk
