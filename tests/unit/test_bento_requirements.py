"""The Bento's serving requirements: pinned from the project's lock, covering every package
the files the Bento includes import, and never re-resolved at build time (so a promotion
builds the same Bento offline)."""

from __future__ import annotations

import ast
import re
import sys

import yaml

from mlops_assets.config import PROJECT_ROOT

# import name -> distribution name, where they differ
DISTRIBUTIONS = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow"}


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _bento_files() -> list:
    spec = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())
    return sorted({p for pattern in spec["include"] for p in PROJECT_ROOT.glob(pattern)
                   if p.suffix == ".py"})


def test_serving_requirements_are_the_locked_versions_and_never_relocked():
    spec = yaml.safe_load((PROJECT_ROOT / "bentofile.yaml").read_text())
    assert spec["python"]["lock_packages"] is False
    serving = _pins(PROJECT_ROOT / "requirements-serving.txt")
    locked = _pins(PROJECT_ROOT / "requirements.lock")
    assert serving, "requirements-serving.txt pins nothing"
    for name, version in serving.items():
        assert locked.get(name) == version, f"{name}=={version}, locked {locked.get(name)}"


def test_every_import_of_the_bento_is_a_serving_requirement():
    serving = _pins(PROJECT_ROOT / "requirements-serving.txt")
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    missing = {}
    for path in _bento_files():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top == "mlops_assets":
                    continue
                if DISTRIBUTIONS.get(top, top).lower() not in serving:
                    missing.setdefault(top, path.relative_to(PROJECT_ROOT).as_posix())
    assert not missing, f"imported by the Bento but not in requirements-serving.txt: {missing}"
