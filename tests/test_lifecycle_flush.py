"""`Store.flush_held()` — what `run --once --flush` calls between processing and delivery:
held work goes now, work waiting to retry keeps its backoff (issue 15). And storm groups per
account and product group, through the store."""

from __future__ import annotations

from tests.lifecycle_support import Mailbridge, lifecycle_config, nagios

T0 = 1_741_078_800.0


async def test_flush_sends_held_appends_resolves_and_burst_opens_now(tmp_path, psa_sim):
    config = lifecycle_config(tmp_path, psa_sim, coalesce_window=300.0, resolve_delay=120.0,
                              burst_threshold=1, group_wait=30.0)
    mb = Mailbridge.from_config(config, now=T0)
    try:
        await mb.feed([nagios("a", at=T0), nagios("a", at=T0 + 1),    # OPEN, held UPDATE
                       nagios("b", at=T0 + 2),                          # burst: held OPEN
                       nagios("c", at=T0 - 100), nagios("c", "RECOVERY", at=T0 + 3)],
                      now=T0 + 3)
        held = mb.store.query("SELECT action, ordering_key FROM outbox WHERE state='pending'")
        assert len(held) == 3, held  # a's UPDATE, b's OPEN, c's RESOLVED
        assert mb.store.flush_held() == 3
        assert mb.store.flush_held() == 0
        await mb.bridge.run_once()
        assert mb.store.outbox_pending_count() == 0
        flushed = mb.store.query("SELECT kind FROM events WHERE kind='flushed'")
    finally:
        await mb.close()
    statuses = sorted(c["incidentStatus"] for c in psa_sim.calls())
    assert statuses == ["OPEN", "OPEN", "OPEN", "RESOLVED", "UPDATE"]
    assert len(flushed) == 1


async def test_flush_leaves_a_retry_backoff_alone(tmp_path, psa_sim):
    config = lifecycle_config(tmp_path, psa_sim)
    mb = Mailbridge.from_config(config, now=T0)
    try:
        psa_sim.control(fail_next=50, fail_status=503)
        await mb.feed([nagios("a", at=T0)], now=T0)
        [row] = mb.store.query("SELECT attempts, next_attempt_at FROM outbox")
        assert row["attempts"] >= 1 and row["next_attempt_at"] > T0  # waiting to retry
        assert mb.store.flush_held() == 0
    finally:
        await mb.close()


async def test_storms_per_product_group_keep_groups_apart(tmp_path, psa_sim):
    # storm_group = "product_group": the storm ticket is keyed and titled by the account and
    # the product group of its alerts, and its members record that group (which is what the
    # burst and cap counts of a group are filtered on).
    config = lifecycle_config(tmp_path, psa_sim, storm_group="product_group", account_cap=5)
    mb = Mailbridge.from_config(config, now=T0)
    try:
        await mb.feed([nagios(f"h{i}", at=T0 + i) for i in range(12)], now=T0 + 12)
        await mb.settle()
        storms = mb.store.query("SELECT alert_key FROM correlations WHERE alert_key LIKE"
                                " 'storm:%'")
        groups = {r["product_group"] for r in mb.store.query(
            "SELECT product_group FROM storm_members")}
    finally:
        await mb.close()
    assert [r["alert_key"] for r in storms] == ["storm:ACME-001:servers"]
    assert groups == {"servers"}
    titles = sorted(t["title"] for t in psa_sim.tickets())
    assert titles[0].startswith("Alert storm: ") and titles[0].endswith(
        "alerts for ACME-001 (servers)")
    assert len(titles) == 4  # three own tickets and the storm ticket
