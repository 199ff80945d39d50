"""Inventory variables must be ones a role reads: a misspelt or stale name is silently ignored by Ansible,
and the knob the operator turned does nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLES = REPO / "ansible" / "roles"
# Connection settings and Ansible's own variables are not role variables.
ANSIBLE_VARS = re.compile(r"^ansible_")


def role_variables() -> set[str]:
    names: set[str] = set()
    for defaults in ROLES.glob("*/defaults/main.yml"):
        names |= set(yaml.safe_load(defaults.read_text()) or {})
    return names


@pytest.mark.parametrize(
    "vars_file",
    sorted(str(p.relative_to(REPO)) for p in (REPO / "inventories").glob("*/group_vars/*.yml")),
)
def test_group_vars_name_only_role_variables(vars_file: str) -> None:
    names = set(yaml.safe_load((REPO / vars_file).read_text()) or {})
    unknown = sorted(n for n in names - role_variables() if not ANSIBLE_VARS.match(n))
    assert unknown == [], f"{vars_file} sets variables no role reads: {unknown}"
