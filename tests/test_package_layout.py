"""The package's layout holds: one folder per domain with its face and its CLI, a dispatcher that only
dispatches, modules a reader can take in at once, and no import cycle between the domains."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scripts" / "llmfleet"
DOMAINS = ["bench", "capacity", "catalog", "deploy", "fleet", "gateway", "hosts", "weights"]
MAX_LINES = 600


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_domain_has_a_face_that_exports_what_it_names_and_a_cli_beside_it(domain):
    init = PACKAGE / domain / "__init__.py"
    tree = ast.parse(init.read_text())
    assert ast.get_docstring(tree), f"{init}: say in a docstring what the domain holds"
    assert (PACKAGE / domain / "cli.py").is_file()
    package = importlib.import_module(f"llmfleet.{domain}")
    for name in getattr(package, "__all__", []):
        assert hasattr(package, name), f"llmfleet.{domain}.__all__ names {name}, which it does not define"
    register = importlib.import_module(f"llmfleet.{domain}.cli").register
    assert callable(register)


def test_the_dispatcher_defines_no_subcommand_of_its_own():
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert functions == {"build_parser", "_with_aliases", "main"}


def test_every_top_level_module_is_shared_by_the_domains_not_a_domain_of_its_own():
    loose = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__", "__main__", "cli", "cliargs", "devtools", "documents", "errors", "paths"]


def test_no_module_is_over_600_lines():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by job: {long}"


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_domain_imports_on_its_own_in_a_fresh_interpreter(domain):
    # A cycle between two domains' faces shows only when one of them is imported first.
    proc = subprocess.run(
        [sys.executable, "-c", f"import llmfleet.{domain}, llmfleet.{domain}.cli"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
