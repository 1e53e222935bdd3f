"""The package's layering, read from its imports (module level and inside functions).

Layers, lowest first; a module may import its own layer or lower ones, never a higher one, and no two
subpackages may import each other (directly or round a longer loop). ``distributed`` runs the batch functions and
actor classes handed to it: it never reaches into training, teachers, evaluation or the pipeline stages. MLflow is
imported by ``tasb_ray/tracking.py`` alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tasb_ray"
LAYERS = [
    {"errors", "fileio", "schema", "config", "tables", ""},
    {"data", "models", "losses", "retrieval"},
    {"distributed", "teachers", "evaluation", "tracking"},
    {"training"},
    {"pipeline", "reporting"},
    {"experiments", "commands", "cli"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
FORBIDDEN = {"distributed": {"training", "teachers", "evaluation", "pipeline"}}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The subpackage (or top-level module) a ``tasb_ray.*`` module belongs to; "" for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, relative imports resolved, at any depth."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # ``from tasb_ray import data`` names a subpackage as an attribute
            if name == "tasb_ray":
                out.extend((node.lineno, f"tasb_ray.{a.name}") for a in node.names
                           if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file())
    return out


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layering_violations(files: list[Path]) -> list[str]:
    problems = []
    edges: dict[str, set[str]] = {}
    for f in files:
        src = _unit(_module_name(f))
        for line, name in imports_of(f):
            where = f"{f.relative_to(PACKAGE.parent)}:{line}"
            if name.split(".")[0] == "mlflow" and _module_name(f) != "tasb_ray.tracking":
                problems.append(f"{where}: imports {name} (only tasb_ray/tracking.py may import mlflow)")
            if not name.startswith("tasb_ray"):
                continue
            dst = _unit(name)
            if dst == src:
                continue
            if src not in RANK or dst not in RANK:
                problems.append(f"{where}: {src or 'tasb_ray'} -> {dst}: a unit with no layer (add it to LAYERS)")
                continue
            if RANK[dst] > RANK[src]:
                problems.append(f"{where}: {src or 'tasb_ray'} (layer {RANK[src]}) imports {name} (layer {RANK[dst]})")
            if dst in FORBIDDEN.get(src, ()):
                problems.append(f"{where}: {src} must not import {dst}")
            edges.setdefault(src, set()).add(dst)
    problems.extend(f"import cycle between subpackages: {' -> '.join(c)}" for c in _cycles(edges))
    return problems


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, seen = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            else:
                visit(nxt, path + [nxt])

    for start in sorted(edges):
        visit(start, [start])
    return found


def test_package_follows_the_layers():
    assert layering_violations(package_files()) == []


def test_no_module_over_the_line_limit():
    long = {str(f.relative_to(PACKAGE.parent)): n for f in package_files()
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("source, expected", [
    ("from tasb_ray.pipeline.run import run_training\n", "training (layer 3) imports tasb_ray.pipeline.run (layer 4)"),
    ("def f():\n    from tasb_ray.experiments import sweep\n", "imports tasb_ray.experiments"),
    ("import mlflow\n", "only tasb_ray/tracking.py may import mlflow"),
])
def test_checker_reports_upward_and_mlflow_imports(tmp_path, source, expected):
    global PACKAGE
    fake = tmp_path / "tasb_ray"
    (fake / "training").mkdir(parents=True)
    (fake / "training" / "bad.py").write_text(source)
    saved, PACKAGE = PACKAGE, fake
    try:
        problems = layering_violations(sorted(fake.rglob("*.py")))
    finally:
        PACKAGE = saved
    assert any(expected in p for p in problems), problems


def test_checker_finds_a_cycle_between_same_layer_units(tmp_path):
    global PACKAGE
    fake = tmp_path / "tasb_ray"
    for unit, other in (("teachers", "evaluation"), ("evaluation", "teachers")):
        (fake / unit).mkdir(parents=True)
        (fake / unit / "m.py").write_text(f"from tasb_ray.{other} import m\n")
    saved, PACKAGE = PACKAGE, fake
    try:
        problems = layering_violations(sorted(fake.rglob("*.py")))
    finally:
        PACKAGE = saved
    assert any("cycle" in p and "teachers" in p and "evaluation" in p for p in problems), problems
