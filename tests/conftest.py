"""Shared fixtures: real servers (Dovecot, aiosmtpd, the PSA simulator) live in tests/fixtures."""

import os

import pytest
import stamina

pytest_plugins = [
    "tests.fixtures.psa",
    "tests.fixtures.smtp",
    "tests.fixtures.dovecot",
]


@pytest.fixture(autouse=True, scope="session")
def _fast_retries():
    # In-call retries of the PSA client wait for real in production; in tests they should not.
    stamina.set_testing(True, attempts=3)
    yield
    stamina.set_testing(False)


# `make test` (and so CI) sets MAILBRIDGE_NO_SYSTEM_SKIPS: there a test skipped for a missing
# system package (Dovecot, Chromium) is a failure, since `make test` installs them. A plain
# `pytest` on a workstation without them still skips, saying what to install.
_SYSTEM_PACKAGE_SKIP = ("is not installed", "no interpreter the service user")


def _fail_if_system_skip(report) -> None:
    if report.skipped and os.environ.get("MAILBRIDGE_NO_SYSTEM_SKIPS"):
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if any(marker in reason for marker in _SYSTEM_PACKAGE_SKIP):
            report.outcome = "failed"
            report.longrepr = f"a system package is missing under `make test`: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_system_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a module skipped as a whole (the browser tests without Chromium)."""
    outcome = yield
    _fail_if_system_skip(outcome.get_result())
