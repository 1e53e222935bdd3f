"""Every third-party module the package imports is declared in pyproject.toml.

A module that arrives only as someone else's dependency (matplotlib came with mlflow) breaks the day that
dependency drops it. Imports are read with ``ast`` (module- and function-level, ``try`` blocks included),
so nothing is imported to check them.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tasb_ray"
# Extras whose packages the library itself may import; "dev" is for the test suite only.
LIBRARY_EXTRAS_EXCLUDED = {"dev"}


def normalise(name: str) -> str:
    """PEP 503 distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return normalise(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def declared_distributions(pyproject: Path) -> dict[str, str]:
    """Distribution -> where pyproject declares it (``dependencies`` or ``extra 'x'``)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = {requirement_name(r): "dependencies" for r in project.get("dependencies", [])}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        if extra in LIBRARY_EXTRAS_EXCLUDED:
            continue
        for r in reqs:
            declared.setdefault(requirement_name(r), f"extra {extra!r}")
    return declared


def imported_top_levels(path: Path) -> dict[str, int]:
    """Top-level module name -> first line importing it (absolute imports only)."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for n in names:
            found.setdefault(n.split(".")[0], node.lineno)
    return found


def undeclared_imports(files: list[Path], declared: dict[str, str], dists: dict[str, list[str]],
                       first_party: str = PACKAGE) -> list[str]:
    """One line per third-party import whose distribution pyproject does not declare."""
    problems = []
    for f in files:
        for name, line in sorted(imported_top_levels(f).items()):
            if name == first_party or name in sys.stdlib_module_names or name == "__future__":
                continue
            # Not installed (an optional extra absent here): its import name is then the best guess at the
            # distribution, as for ir_datasets / ir-datasets.
            candidates = [normalise(d) for d in dists.get(name, [])] or [normalise(name)]
            if not any(c in declared for c in candidates):
                problems.append(f"{f.relative_to(ROOT) if f.is_relative_to(ROOT) else f}:{line}: imports {name!r} "
                                f"(distribution {', '.join(candidates)}), not declared in pyproject.toml")
    return problems


def test_every_third_party_import_is_declared():
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    assert len(files) > 20
    problems = undeclared_imports(files, declared_distributions(ROOT / "pyproject.toml"), packages_distributions())
    assert not problems, "\n".join(problems)


def test_checker_finds_an_undeclared_import(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("import os\nimport numpy as np\nfrom tasb_ray.errors import ConfigError\n\n"
                   "def plot():\n    import matplotlib.pyplot as plt\n    from yaml import safe_load\n")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["numpy>=1", "PyYAML"]\n'
                         '[project.optional-dependencies]\ndev = ["matplotlib"]\n')
    declared = declared_distributions(pyproject)
    dists = {"numpy": ["numpy"], "yaml": ["PyYAML"], "matplotlib": ["matplotlib"]}
    problems = undeclared_imports([src], declared, dists)
    assert len(problems) == 1 and "mod.py:6: imports 'matplotlib'" in problems[0]
    # Declared through an extra meant for it: accepted.
    pyproject.write_text(pyproject.read_text().replace('dev = ["matplotlib"]', 'report = ["matplotlib>=3.8"]'))
    assert undeclared_imports([src], declared_distributions(pyproject), dists) == []
    # Not installed and not declared: named by its import name.
    src.write_text("import not_a_real_dist_xyz\n")
    assert "not-a-real-dist-xyz" in undeclared_imports([src], declared, {})[0]
