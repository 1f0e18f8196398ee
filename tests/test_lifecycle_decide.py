"""decide() and the storm ticket for issue 15, as pure functions: flaps, half-open windows,
bursts held and taken over, damping."""

from dataclasses import replace

from bridge.config import StormSettings
from bridge.decide.core import decide
from bridge.decide.stormgroup import STORM_APPEND_CHARS, add_storm_line
from bridge.models import Alert, AlertContext, CorrelationView, HeldOpen, ListedAlert, Outcome, \
    PendingCall

POLICY = StormSettings(coalesce_window=300, resolve_delay=120, account_cap=10,
                       account_window=60, global_cap=100, burst_threshold=3, burst_window=30,
                       group_wait=30)
KEY = "nagios:ACME-001:web01:HTTP"


def alert(status="open", key=KEY, min_duration=0.0):
    return Alert(key, status, "ACME-001", "servers", "Host Down", f"{key} down", "details",
                 min_duration=min_duration)


def corr(opened=1000.0, cid="c1"):
    return CorrelationView(KEY, cid, opened_at=opened)


def pending(action, first=1000.0, due=1300.0, row=7, held_until=None, cid="c1"):
    return PendingCall(row, action, first, 1, due, 3, 0, cid, held_until)


def test_window_zero_never_folds_a_repeat_of_the_same_second():
    plain = POLICY.model_copy(update={"coalesce_window": 0.0})
    ctx = AlertContext(1000.0, corr(), pending_update=pending("UPDATE", first=1000.0))
    d = decide(alert(), ctx, policy=plain)
    assert d.outcome is None and d.outbox[0].action == "UPDATE"
    assert d.outbox[0].not_before is None


def test_window_is_half_open():
    at_end = AlertContext(1300.0, corr(), pending_update=pending("UPDATE", first=1000.0))
    assert decide(alert(), at_end, policy=POLICY).outcome is None
    inside = replace(at_end, arrived_at=1299.9)
    assert decide(alert(), inside, policy=POLICY).outcome is Outcome.COALESCED


def test_refire_after_its_resolve_was_due_opens_a_new_ticket_naming_the_old_one():
    ctx = AlertContext(1500.0, corr(), pending_resolve=pending("RESOLVED", held_until=1400.0))
    d = decide(alert(), ctx, new_id=lambda: "c2", policy=POLICY)
    assert d.cancel_row is None and d.open_correlation == "c2"
    assert d.close_correlation == "c1" and d.previous_id == "c1"


def test_heal_within_a_held_open_is_damped():
    ctx = AlertContext(1040.0, corr(), held_open=pending("OPEN", held_until=1060.0))
    d = decide(alert("resolved"), ctx, policy=POLICY)
    assert d.outcome is Outcome.DAMPED and d.damp == "c1" and d.outbox == ()


def test_heal_after_the_open_was_due_resolves():
    ctx = AlertContext(1070.0, corr(), held_open=pending("OPEN", held_until=1060.0))
    d = decide(alert("resolved"), ctx, policy=POLICY)
    assert d.outcome is None and d.outbox[0].action == "RESOLVED"


def test_min_duration_holds_the_open():
    d = decide(alert(min_duration=60.0), AlertContext(1000.0), new_id=lambda: "n",
               policy=POLICY)
    assert d.outbox[0].action == "OPEN" and d.outbox[0].not_before == 1060.0


def test_lone_alert_is_never_held_and_a_burst_waits_group_wait():
    quiet = decide(alert(), AlertContext(1000.0, burst_alerts=2), new_id=lambda: "n",
                   policy=POLICY)
    assert quiet.outbox[0].not_before is None
    burst = decide(alert(), AlertContext(1000.0, burst_alerts=3), new_id=lambda: "n",
                   policy=POLICY)
    assert burst.outbox[0].not_before == 1030.0 and "group wait" in burst.reason


def test_cap_reached_opens_a_storm_ticket_that_takes_over_held_opens():
    held = tuple(HeldOpen(10 + i, f"nagios:ACME-001:h{i}:HTTP", f"c{i}", f"h{i} down",
                          "Host Down", "servers", 1000.0 + i, 1030.0 + i) for i in range(6))
    own = (ListedAlert("nagios:ACME-001:first:HTTP", "first down", "Host Down", "own-1"),)
    ctx = AlertContext(1008.0, new_alerts_account=10, burst_alerts=9, held_opens=held,
                       own_tickets=own)
    d = decide(alert(), ctx, new_id=lambda: "storm-1", policy=POLICY)
    [item] = d.outbox
    assert item.action == "OPEN" and item.ordering_key == "storm:ACME-001"
    # No storm routing configured: the first alert's.
    assert (item.payload["product_group"], item.payload["alert_type"]) == ("servers", "Host Down")
    assert item.payload["title"] == "Alert storm: 7 alerts for ACME-001"
    assert item.not_before == 1030.0  # when the first held OPEN would have gone
    assert d.absorb == held and d.storm_join == "storm-1"
    summary = item.payload["summary"]
    assert all(h.alert_key in summary for h in held) and KEY in summary
    assert "Host Down:\n- " in summary and "own-1" in summary


def test_quiet_account_is_not_grouped_because_others_storm():
    ctx = AlertContext(1000.0, new_alerts_global=500, burst_alerts=0)
    d = decide(alert(), ctx, new_id=lambda: "n", policy=POLICY)
    assert d.outbox[0].action == "OPEN" and d.outbox[0].ordering_key == KEY


def test_storm_list_keeps_one_block_per_section():
    s = add_storm_line("header.", "Host Down", "- a")
    s = add_storm_line(s, "Recovered", "- RECOVERED a")
    s = add_storm_line(s, "Host Down", "- b")
    assert s == "header.\n\nHost Down:\n- a\n- b\n\nRecovered:\n- RECOVERED a"


def test_a_big_takeover_is_split_into_rows_that_fit_a_summary():
    held = tuple(HeldOpen(i, f"nagios:ACME-001:{'x' * 80}{i}:HTTP", f"c{i}", "t" * 100,
                          "Host Down", "servers", 1000.0, 1030.0) for i in range(200))
    ctx = AlertContext(1008.0, new_alerts_account=300, burst_alerts=300, held_opens=held)
    d = decide(alert(), ctx, new_id=lambda: "s", policy=POLICY)
    assert [i.action for i in d.outbox][:2] == ["OPEN", "UPDATE"]
    assert all(len(i.payload["summary"]) <= STORM_APPEND_CHARS for i in d.outbox)


def test_storm_group_by_product_group_keys_and_titles_the_storm_ticket():
    per_group = POLICY.model_copy(update={"storm_group": "product_group"})
    ctx = AlertContext(1008.0, new_alerts_account=10, burst_alerts=9)
    d = decide(alert(), ctx, new_id=lambda: "s", policy=per_group)
    [item] = d.outbox
    assert item.ordering_key == "storm:ACME-001:servers" and d.open_key == item.ordering_key
    assert item.payload["title"] == "Alert storm: 1 alert for ACME-001 (servers)"
