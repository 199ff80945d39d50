"""Host tools the tests run for real, which `make host-packages` installs: haproxy, podman, debootstrap, runc.

A test module that needs one marks itself with ``pytestmark = needs_host_tool("haproxy", HAPROXY)``,
where ``HAPROXY = host_tool("haproxy", "/usr/sbin/haproxy")``. Where the tool is missing, the module's
tests are skipped and the skip says which tool and how to install it. With
``LLMFLEET_REQUIRE_HOST_TOOLS=1`` (what `make unit` sets, having installed them first) they fail
instead: a run that was meant to exercise the real tool cannot come out green without it.

The failing is done by ``pytest_runtest_setup`` below (tests/conftest.py imports it, and so registers
it; another pytest run loads this module with ``-p hosttools``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRE_ENV = "LLMFLEET_REQUIRE_HOST_TOOLS"
HOST_PACKAGES = ("haproxy", "podman", "debootstrap", "runc")
MISSING_MARK = "host_tool_missing"


def host_tool(name: str, *usual: str) -> Path | None:
    """Where a host tool is: the first of its usual paths that is there (Debian puts haproxy, runc and
    debootstrap in /usr/sbin, which a user's PATH may lack), else the one on PATH; None when missing."""
    for candidate in map(Path, usual):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def host_tools_required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def needs_host_tool(name: str, found: Path | None) -> pytest.MarkDecorator:
    """The mark for a module that runs ``name``: nothing when it is there (``found``), else a skip
    naming it, or with LLMFLEET_REQUIRE_HOST_TOOLS=1 a failure naming it."""
    if name not in HOST_PACKAGES:
        raise ValueError(f"{name} is not one of the host packages make installs: {', '.join(HOST_PACKAGES)}")
    why = f"{name} not found (looked in its usual place and on PATH); these tests run the real {name}"
    if found is not None:
        return pytest.mark.skipif(False, reason=f"{name} is at {found}")
    if host_tools_required():
        return getattr(pytest.mark, MISSING_MARK)(
            f"{why}, and {REQUIRE_ENV}=1 says it must be installed here (make host-packages installs it)"
        )
    return pytest.mark.skipif(True, reason=f"{why} (apt-get install {name}, or make host-packages)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MISSING_MARK}(reason): a required host tool is missing; the test fails"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(MISSING_MARK):
        pytest.fail(mark.args[0], pytrace=False)
