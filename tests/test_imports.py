"""The import graph of src/ runs downward: no cycle between modules, and no import from a
package on a lower floor into one on a higher floor (the floors of DESIGN.md, with the
registry on floor 2: it holds entries and finds pillars by module name, importing none)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

FLOORS = {
    # 0-1: the bottom
    "errors": 0, "types": 1, "targets": 1, "distributed": 1, "losses": 1, "checks": 1,
    "params": 1, "threads": 1, "lazy": 1, "runs": 1, "interrupts": 1,
    # 2
    "hooks": 2, "record": 2, "batches": 2, "io": 2, "registry": 2, "": 2,  # "": the package root
    "sharded": 2,
    # 3: the substrate
    "importance": 3, "select": 3, "intervene": 3, "consolidate": 3, "loop": 3,
    # 4
    "data": 4, "models": 4, "evaluate": 4, "training": 4,
    # 5: the pillars
    "forget": 5, "sparse": 5, "continual": 5, "local": 5, "adapt": 5, "skills": 5,
    # 7
    "cli": 7, "__main__": 7,
}
# imports between packages of one floor that are allowed, in this direction only
SAME_FLOOR = {("intervene", "loop"), ("intervene", "importance"), ("intervene", "select"),
              ("consolidate", "targets"), ("evaluate", "data"), ("evaluate", "models"),
              ("models", "data"), ("skills", "forget"), ("adapt", "local"), ("hooks", "batches"),
              ("record", "hooks"), ("io", "batches"), ("registry", "params"), ("", "registry"),
              ("training", "data"), ("distributed", "runs"), ("__main__", "cli"),
              ("sharded", "batches")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (SRC / "neuroplastic").rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against the package
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                if not base.startswith("neuroplastic"):
                    continue
                subs = {f"{base}.{a.name}" for a in node.names} & set(modules)
                graph[name] |= subs or ({base} & set(modules))
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle_between_modules():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_floors():
    upward = []
    for module, deps in import_graph().items():
        for dep in deps:
            a, b = package_of(module), package_of(dep)
            if a == b:
                continue
            assert a in FLOORS and b in FLOORS, f"{a or b!r} has no floor: add it to FLOORS"
            if FLOORS[b] > FLOORS[a] or (FLOORS[b] == FLOORS[a] and (a, b) not in SAME_FLOOR):
                upward.append(f"{module} -> {dep}")
    assert upward == [], "\n".join(sorted(upward))


def test_pillars_load_by_name_and_import_neuroplastic_stays_light():
    code = ("import sys, neuroplastic; from neuroplastic import registry; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'neuroplastic')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" not in out and "neuroplastic.forget" not in out, out
