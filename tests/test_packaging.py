"""pyproject.toml declares what fnweb imports, and the pinned lists agree with its bounds.

A wheel of fnweb installs its declared dependencies; requirements.txt (the Space's pinned
list) and requirements-test.txt pin the tested versions. Read from the files, not from an
installed copy's metadata, so the test checks this checkout.
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")

ROOT = Path(__file__).resolve().parent.parent


def declared() -> dict[str, Requirement]:
    """Every requirement in pyproject.toml, runtime and extras, by canonical name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def pinned(filename: str) -> list[Requirement]:
    lines = (ROOT / filename).read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def imported_top_level_modules() -> set[str]:
    names = set()
    for path in [ROOT / "app.py", *sorted((ROOT / "fnweb").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"fnweb", "app", "__future__"}


def test_every_package_fnweb_imports_is_declared():
    providers = metadata.packages_distributions()
    missing = {}
    for module in sorted(imported_top_level_modules()):
        dists = {canonicalize_name(d) for d in providers.get(module, [module])}
        if not dists & set(declared()):
            missing[module] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


@pytest.mark.parametrize("filename", ["requirements.txt", "requirements-test.txt"])
def test_the_pinned_lists_fall_within_the_declared_bounds(filename):
    bounds = declared()
    for requirement in pinned(filename):
        name = canonicalize_name(requirement.name)
        assert name in bounds, f"{requirement} in {filename} is not declared in pyproject.toml"
        for spec in requirement.specifier:
            if spec.operator == "==":
                assert bounds[name].specifier.contains(spec.version), f"{requirement} is outside {bounds[name]}"


def test_the_installed_versions_satisfy_the_declared_bounds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in map(Requirement, project["dependencies"]):
        version = metadata.version(requirement.name)
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name} {version}: {requirement}"
