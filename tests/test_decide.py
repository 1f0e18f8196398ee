"""decide(): the create / append / resolve table of SPEC §3.5, as a pure function."""

from bridge.decide.core import decide
from bridge.models import Alert, CorrelationView, Outcome


def alert(status="open", key="acme:web01:Host Down"):
    return Alert(alert_key=key, status=status, account_id="ACME-001", product_group="servers",
                 alert_type="Host Down", title="web01 down", summary="PING CRITICAL",
                 device="web01")


def corr(key="acme:web01:Host Down"):
    return CorrelationView(key, "cid-1", opened_at=100.0, occurrences=2)


def test_first_occurrence_opens_with_a_new_correlation_id():
    d = decide(alert(), None, new_id=lambda: "fresh")
    assert d.outcome is None and d.open_correlation == "fresh"
    [item] = d.outbox
    assert (item.kind, item.action, item.correlation_id, item.ordering_key) == \
        ("psa", "OPEN", "fresh", "acme:web01:Host Down")
    assert item.payload == {"title": "web01 down", "summary": "PING CRITICAL",
                            "alert_type": "Host Down", "account_id": "ACME-001",
                            "product_group": "servers", "device": "web01"}


def test_repeat_appends_to_the_open_ticket():
    d = decide(alert("open"), corr())
    assert [(i.action, i.correlation_id) for i in d.outbox] == [("UPDATE", "cid-1")]
    assert d.open_correlation is None and d.close_correlation is None


def test_update_status_appends_too():
    assert decide(alert("update"), corr()).outbox[0].action == "UPDATE"


def test_update_without_open_ticket_creates():
    assert decide(alert("update"), None).outbox[0].action == "OPEN"


def test_resolved_closes_the_open_ticket():
    d = decide(alert("resolved"), corr())
    assert [(i.action, i.correlation_id) for i in d.outbox] == [("RESOLVED", "cid-1")]
    assert d.close_correlation == "cid-1"


def test_resolved_without_ticket_sends_nothing():
    d = decide(alert("resolved"), None)
    assert d.outcome is Outcome.NOTHING_TO_RESOLVE and d.outbox == ()
    assert "no open ticket" in d.reason
