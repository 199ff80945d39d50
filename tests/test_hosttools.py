"""tests/hosttools.py: a missing host tool skips its tests, or fails them with LLMFLEET_REQUIRE_HOST_TOOLS=1.

Each case runs pytest in a child process on a tiny generated test module that marks itself the way
tests/test_gateway_haproxy.py does, with a PATH that has no haproxy on it (or a stand-in one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
NEEDS_HAPROXY = """
from hosttools import host_tool, needs_host_tool

HAPROXY = host_tool("haproxy")  # PATH only: the child's PATH is all it can find it on
pytestmark = needs_host_tool("haproxy", HAPROXY)


def test_runs_haproxy():
    assert HAPROXY is not None and HAPROXY.name == "haproxy"
"""


def run_pytest(
    tmp_path: Path, path_dirs: list[Path], require: str | None
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # this run's own rootdir and settings
    (tmp_path / "test_needs_haproxy.py").write_text(NEEDS_HAPROXY)
    env = {k: v for k, v in os.environ.items() if k != "LLMFLEET_REQUIRE_HOST_TOOLS"}
    env["PATH"] = os.pathsep.join(map(str, path_dirs))
    env["PYTHONPATH"] = str(TESTS)
    if require is not None:
        env["LLMFLEET_REQUIRE_HOST_TOOLS"] = require
    argv = [sys.executable, "-m", "pytest", "-p", "hosttools", "-p", "no:cacheprovider", "-rsE", "-q"]
    return subprocess.run(
        [*argv, "-c", str(tmp_path / "pytest.ini"), str(tmp_path / "test_needs_haproxy.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin-without-haproxy"
    path.mkdir()
    return path


def test_without_the_variable_a_missing_host_tool_skips_the_module_naming_it(tmp_path, empty_dir):
    done = run_pytest(tmp_path, [empty_dir], require=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout and "passed" not in done.stdout and "error" not in done.stdout
    assert "SKIPPED" in done.stdout and "haproxy not found" in done.stdout
    assert "apt-get install haproxy" in done.stdout


def test_with_the_variable_a_missing_host_tool_fails_the_module_naming_it(tmp_path, empty_dir):
    done = run_pytest(tmp_path, [empty_dir], require="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout and "skipped" not in done.stdout and "passed" not in done.stdout
    assert "haproxy not found" in done.stdout
    assert "LLMFLEET_REQUIRE_HOST_TOOLS=1 says it must be installed here" in done.stdout


def test_with_the_variable_set_to_anything_but_1_a_missing_host_tool_still_skips(tmp_path, empty_dir):
    done = run_pytest(tmp_path, [empty_dir], require="0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout


def test_with_the_variable_a_host_tool_on_path_runs_the_module(tmp_path, empty_dir):
    # The control: the same module and variable pass once a haproxy is on PATH.
    stand_in = empty_dir / "haproxy"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    done = run_pytest(tmp_path, [empty_dir], require="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout and "skipped" not in done.stdout


def test_only_the_host_packages_make_installs_can_be_required():
    from hosttools import HOST_PACKAGES, needs_host_tool

    assert HOST_PACKAGES == ("haproxy", "podman", "debootstrap", "runc")
    with pytest.raises(ValueError, match="terraform is not one of the host packages"):
        needs_host_tool("terraform", None)
