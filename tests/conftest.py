"""Shared fixtures: real servers (Dovecot, aiosmtpd, the PSA simulator) live in tests/fixtures."""

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
