"""`mailbridge demo` (what `make demo` runs): the samples through the whole pipeline."""

from tests.helpers import cli


def test_demo_shows_created_appended_resolved_skipped_unmatched_and_the_tickets():
    result = cli("demo", timeout=120)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    for outcome in ("created", "appended", "resolved", "skipped", "unmatched", "regular",
                    "rejected", "failed"):
        assert f" {outcome} " in out, outcome
    assert "Tickets in the PSA simulator: 8" in out
    assert "- RESOLVED" in out and "- UPDATE" in out
    assert "to support@msp.example: [mailbridge] Fwd:" in out
    assert "Traceback" not in out + result.stderr.decode()
