"""Every function is a `kn func` project: the shape `kn func create -l python -t
cloudevents` makes, a func.yaml that validates against func's own schema, and
dependency pins that agree with the root requirements.txt."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = sorted(p for p in (ROOT / "functions").iterdir() if p.is_dir())
# CI and every developer have shared/ beside the checkout.
FUNC_YAML_SCHEMA = ROOT.parent / "shared" / "reference" / "func_yaml-schema.json"


def func_yaml_schema() -> dict[str, object]:
    return json.loads(FUNC_YAML_SCHEMA.read_text())  # type: ignore[no-any-return]


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line)
        if match:
            found[match[1].lower()] = match[3]
    return found


def test_given_the_tree_then_all_seven_functions_exist():
    assert [p.name for p in FUNCTIONS] == sorted([
        "parse-comment", "link-identity", "lease-key", "sign-tx", "verify-tx", "todo-crud",
        "accrue-payment"])


@pytest.mark.parametrize("folder", FUNCTIONS, ids=lambda p: p.name)
def test_given_function_folder_then_kn_func_shape(folder):
    for part in ("func.yaml", "pyproject.toml", "function/__init__.py", "function/func.py",
                 "tests"):
        assert (folder / part).exists(), part
    assert "new" in (folder / "function" / "__init__.py").read_text()


@pytest.mark.parametrize("folder", FUNCTIONS, ids=lambda p: p.name)
def test_given_func_yaml_then_it_validates_against_funcs_schema(folder):
    document = yaml.safe_load((folder / "func.yaml").read_text())
    # YAML reads the timestamp as a datetime; func writes and reads it as a string.
    document["created"] = str(document["created"])
    jsonschema.Draft4Validator(func_yaml_schema()).validate(document)
    assert document["name"] == folder.name
    assert document["runtime"] == "python"
    assert document["invoke"] == "cloudevent"
    assert document["deploy"]["options"]["scale"]["min"] == 0


@pytest.mark.parametrize("folder", FUNCTIONS, ids=lambda p: p.name)
def test_given_function_pyproject_then_pins_agree_with_requirements(folder):
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    assert project["name"] == "function"
    own = pins(project["dependencies"])
    root = pins((ROOT / "requirements.txt").read_text().splitlines())
    assert own, "a function pins its dependencies"
    for name, version in own.items():
        assert root.get(name) == version, name
