"""Storm control in decide(): coalescing, resolve delay (flap damping), caps, re-open, stale."""

from bridge.config import StormSettings
from bridge.decide.core import decide
from bridge.models import Alert, AlertContext, CorrelationView, Outcome, PendingCall

POLICY = StormSettings(coalesce_window=300, resolve_delay=120, account_cap=3,
                       account_window=60, global_cap=100, storm_product_group="storm",
                       storm_alert_type="Alert Storm", max_open_age_days=30)
KEY = "acme:web01:Host Down"


def alert(status="open", key=KEY):
    return Alert(key, status, "ACME-001", "servers", "Host Down", "web01 down", "details")


def corr(opened=1000.0, key=KEY, cid="c1"):
    return CorrelationView(key, cid, opened_at=opened, occurrences=1)


def pending(action, first=1000.0, due=1300.0, row=7):
    return PendingCall(row, action, first, 1, due, message_ref=3)


def test_repeat_is_held_for_the_window_so_later_repeats_fold_into_it():
    d = decide(alert(), AlertContext(1010.0, corr()), policy=POLICY)
    [item] = d.outbox
    assert item.action == "UPDATE" and item.not_before == 1310.0


def test_repeat_within_window_folds_into_the_waiting_append():
    d = decide(alert(), AlertContext(1200.0, corr(), pending_update=pending("UPDATE")),
               policy=POLICY)
    assert d.outcome is Outcome.COALESCED and d.fold_into == 7 and d.outbox == ()


def test_repeat_after_window_starts_a_new_append():
    d = decide(alert(), AlertContext(1400.0, corr(), pending_update=pending("UPDATE")),
               policy=POLICY)
    assert d.outcome is None and d.outbox[0].action == "UPDATE"


def test_resolve_is_held_and_keeps_the_ticket_open_meanwhile():
    d = decide(alert("resolved"), AlertContext(2000.0, corr()), policy=POLICY)
    [item] = d.outbox
    assert item.action == "RESOLVED" and item.not_before == 2120.0
    assert d.close_correlation is None  # closed when sent, so a re-fire can cancel it


def test_resolve_waits_behind_a_held_append():
    d = decide(alert("resolved"),
               AlertContext(2000.0, corr(), pending_update=pending("UPDATE", due=2500.0)),
               policy=POLICY)
    assert d.outbox[0].not_before == 2500.0


def test_fire_within_resolve_delay_cancels_the_resolve():
    ctx = AlertContext(2050.0, corr(), pending_resolve=pending("RESOLVED", due=2120.0, row=9))
    d = decide(alert(), ctx, policy=POLICY)
    assert d.cancel_row == 9 and d.outbox[0].action == "UPDATE"
    assert "flapping" in d.outbox[0].payload["summary"]


def test_second_resolve_folds_into_the_waiting_one():
    ctx = AlertContext(2050.0, corr(), pending_resolve=pending("RESOLVED", due=2120.0, row=9))
    d = decide(alert("resolved"), ctx, policy=POLICY)
    assert d.outcome is Outcome.COALESCED and d.fold_into == 9


def test_without_delay_a_resolve_sends_the_held_append_now():
    plain = POLICY.model_copy(update={"resolve_delay": 0.0})
    d = decide(alert("resolved"),
               AlertContext(2000.0, corr(), pending_update=pending("UPDATE", due=2500.0, row=4)),
               policy=plain)
    assert d.flush_row == 4 and d.outbox[0].not_before is None


def test_without_delay_resolve_closes_at_once():
    plain = POLICY.model_copy(update={"resolve_delay": 0.0})
    d = decide(alert("resolved"), AlertContext(2000.0, corr()), policy=plain)
    assert d.close_correlation == "c1" and d.outbox[0].not_before is None


def test_over_the_account_cap_opens_a_storm_ticket():
    d = decide(alert(key="acme:db9:x"), AlertContext(3000.0, new_alerts_account=3),
               new_id=lambda: "storm-1", policy=POLICY)
    [item] = d.outbox
    assert item.ordering_key == "storm:ACME-001" and item.action == "OPEN"
    assert item.payload["product_group"] == "storm" and item.payload["alert_type"] == "Alert Storm"
    assert d.storm_join == "storm-1" and d.open_key == "storm:ACME-001"
    assert "acme:db9:x" in item.payload["summary"]


def test_further_alerts_join_the_open_storm_and_fold():
    storm = corr(key="storm:ACME-001", cid="storm-1")
    ctx = AlertContext(3010.0, new_alerts_account=9, open_storm=storm,
                       storm_pending_update=pending("UPDATE", first=3005.0, row=11))
    d = decide(alert(key="acme:db10:x"), ctx, policy=POLICY)
    assert d.outcome is Outcome.COALESCED and d.fold_into == 11 and d.storm_join == "storm-1"
    assert "acme:db10:x" in d.fold_note


def test_grouped_key_recovery_resolves_storm_only_when_last():
    storm = corr(key="storm:ACME-001", cid="storm-1")
    some_left = decide(alert("resolved", "k1"),
                       AlertContext(4000.0, storm_of_key=storm, storm_members_open=2),
                       policy=POLICY)
    assert some_left.storm_leave == "storm-1" and some_left.outbox[0].action == "UPDATE"
    last = decide(alert("resolved", "k2"),
                  AlertContext(4001.0, storm_of_key=storm, storm_members_open=1), policy=POLICY)
    assert last.outbox[0].action == "RESOLVED" and last.close_correlation == "storm-1"


def test_reopen_after_close_makes_a_new_ticket_that_names_the_old_one():
    ctx = AlertContext(5000.0, last_closed=corr(cid="old"))
    d = decide(alert(), ctx, new_id=lambda: "new", policy=POLICY)
    assert d.outbox[0].action == "OPEN" and d.previous_id == "old"
    assert "old" in d.outbox[0].payload["summary"]


def test_reopen_append_policy_appends_to_the_closed_ticket():
    ctx = AlertContext(5000.0, last_closed=corr(cid="old"))
    d = decide(alert(), ctx, policy=POLICY.model_copy(update={"reopen": "append"}))
    assert d.reopen == "old" and d.outbox[0].action == "UPDATE"


def test_stale_open_ticket_is_closed_and_a_new_one_opened():
    ctx = AlertContext(1000.0 + 31 * 86400, corr())
    d = decide(alert(), ctx, new_id=lambda: "fresh", policy=POLICY)
    assert d.close_correlation == "c1" and d.open_correlation == "fresh"
    assert "stale" in d.reason


def test_a_rule_window_overrides_the_global_one():
    from dataclasses import replace as dc_replace

    quick = dc_replace(alert(), coalesce_window=10.0)
    d = decide(quick, AlertContext(1010.0, corr()), policy=POLICY)
    assert d.outbox[0].not_before == 1020.0
    later = decide(quick, AlertContext(1200.0, corr(), pending_update=pending("UPDATE")),
                   policy=POLICY)
    assert later.outcome is None  # 200 s after the first: beyond the rule's 10 s window
