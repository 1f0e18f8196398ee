"""The PSA simulator over real HTTP, spoken to with plain httpx (no mailbridge client)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.psa_sim import DEFAULT_PARTNER, PartnerError, load_partner
from tests.fixtures.psa import SimulatorServer

SYNC = "/api/oem-alerts-api/alert/sync"
CREDS = {"clientId": "demo-client", "clientSecret": "demo-secret",
         "organizationOemToken": "demo-org-token"}


def body(status: str = "OPEN", correlation_id: str | None = None, **data: Any) -> dict[str, Any]:
    fields = {"title": "Host Down: web01", "summary": "PING CRITICAL", "alertType": "Host Down",
              "accountId": "ACME-001", "productGroup": "servers", "incidentStatus": status}
    out: dict[str, Any] = CREDS | {"grantType": "client_credentials", "scope": "vendor_manage",
                                   "integrationId": "demo-integration", "data": fields | data}
    if correlation_id:
        out["correlationId"] = correlation_id
    return out


def cid_of(resp: httpx.Response) -> str:
    data = resp.json()["data"]
    return data.get("correlationID") or data["correlationId"]


@pytest.fixture
def exact(psa_sim: SimulatorServer) -> SimulatorServer:
    """The simulator answering exactly like the seed's examples (no varied quirks)."""
    psa_sim.control(quirks=False)
    return psa_sim


def post(sim: SimulatorServer, payload: dict[str, Any]) -> httpx.Response:
    return sim.http.post(sim.url + SYNC, json=payload)


def test_default_partner_is_the_demo_setup() -> None:
    partner = load_partner(DEFAULT_PARTNER)
    assert partner.credentials.client_id == "demo-client"
    assert [i.id for i in partner.integrations] == ["demo-integration"]
    assert {a.id: a.mapped for a in partner.accounts} == {
        "ACME-001": True, "GLOBEX-002": True, "INITECH-003": True, "UMBRELLA-004": False,
        "SOYLENT-005": True}
    groups = {g.name: g.alert_types for g in partner.product_groups}
    assert groups["servers"] == ["Host Down", "Service Critical", "Service Warning", "Disk Space"]
    assert groups["storm"] == ["Alert Storm"] and groups["test"] == ["Test Alert"]
    assert all(r.enabled for g in partner.product_groups for r in g.rules)
    assert all(g.rules for g in partner.product_groups)


def test_bad_partner_file_names_key(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[credentials]\nclient_id = "a"\nclient_secret = "b"\n'
                   'organization_oem_token = "c"\n[features]\nticket_creaton = true\n')
    with pytest.raises(PartnerError, match=r"features\.ticket_creaton: unknown key"):
        load_partner(bad)
    with pytest.raises(PartnerError, match="not found"):
        load_partner(tmp_path / "missing.toml")


def test_create_update_close_exactly_as_the_seed(exact: SimulatorServer) -> None:
    resp = post(exact, body())
    assert resp.status_code == 201
    created = resp.json()
    assert created["statusCode"] == 201 and created["message"] == "created"
    assert set(created["data"]) == {"messageId", "correlationID"}
    cid = created["data"]["correlationID"]

    resp = post(exact, body("UPDATE", cid, summary="still down"))
    assert resp.status_code == 200
    assert resp.json()["message"] == "updated" and resp.json()["statusCode"] == 201

    resp = post(exact, body("RESOLVED", cid, summary="back up"))
    assert resp.status_code == 200
    assert resp.json()["statusCode"] == "200"  # a string, as the seed shows
    assert resp.json()["message"] == "closed"

    (ticket,) = exact.tickets()
    assert ticket["status"] == "closed" and ticket["queue"] == "Servers"
    assert [h["action"] for h in ticket["history"]] == ["created", "appended", "closed"]
    assert ticket["history"][1]["summary"] == "still down"
    assert all({"status", "title", "summary", "at"} <= set(h) for h in ticket["history"])


def test_caller_correlation_id_is_honoured_and_repeat_create_is_the_same_ticket(
        psa_sim: SimulatorServer) -> None:
    first = post(psa_sim, body(correlation_id="mb-0001"))
    again = post(psa_sim, body(correlation_id="mb-0001"))
    assert first.status_code == again.status_code == 201
    assert cid_of(first) == cid_of(again) == "mb-0001"
    assert len(psa_sim.tickets()) == 1
    assert len(psa_sim.tickets()[0]["history"]) == 1  # a repeat changes nothing


def test_quirks_vary_key_spelling_and_status_types(psa_sim: SimulatorServer) -> None:
    keys, types = set(), set()
    for n in range(4):
        resp = post(psa_sim, body(title=f"t{n}")).json()
        keys |= set(resp["data"]) - {"messageId"}
        types.add(type(resp["statusCode"]))
    assert keys == {"correlationID", "correlationId"}
    assert types == {int, str}


def test_wrong_credentials_are_401_everywhere(psa_sim: SimulatorServer) -> None:
    resp = post(psa_sim, body() | {"clientSecret": "nope"})
    assert resp.status_code == 401
    for path in ("/api/oem-alerts-api/alert", "/api/oem-alerts-api/alert/x",
                 "/api/oem-api/integration/list"):
        assert psa_sim.http.get(psa_sim.url + path).status_code == 401
        bad = CREDS | {"organizationOemToken": "wrong"}
        assert psa_sim.http.get(psa_sim.url + path, headers=bad).status_code == 401
    assert psa_sim.tickets() == []
    assert "demo-secret" not in str(psa_sim.calls(None))


def test_get_endpoints(psa_sim: SimulatorServer) -> None:
    cid = cid_of(post(psa_sim, body()))
    one = psa_sim.http.get(f"{psa_sim.url}/api/oem-alerts-api/alert/{cid}", headers=CREDS)
    assert one.status_code == 200 and one.json()["data"]["correlationId"] == cid
    assert one.json()["data"]["history"][0]["action"] == "created"
    listed = psa_sim.http.get(f"{psa_sim.url}/api/oem-alerts-api/alert", headers=CREDS).json()["data"]
    assert [t["correlationId"] for t in listed] == [cid]
    missing = psa_sim.http.get(f"{psa_sim.url}/api/oem-alerts-api/alert/nope", headers=CREDS)
    assert missing.status_code == 404
    integrations = psa_sim.http.get(f"{psa_sim.url}/api/oem-api/integration/list", headers=CREDS)
    assert integrations.json()["data"][0] == {
        "id": "demo-integration", "name": "mailbridge demo", "active": True,
        "alertingEnabled": True, "psa": "ConnectWise Manage"}


@pytest.mark.parametrize("control, payload, status, cause", [
    ({"psa": ""}, {}, 404, "No PSA found"),
    ({}, {"accountId": "NOPE-9"}, 404, "Account was not found"),
    ({}, {"accountId": "UMBRELLA-004"}, 404, "not mapped"),
    ({}, {"productGroup": "toasters"}, 404, "No rules defined for product group"),
    ({"rule": {"product_group": "servers", "enabled": False}}, {}, 404, "turned off"),
    ({"integration": {"active": False}}, {}, 409, "not in an active state"),
    ({"integration": {"alerting": False}}, {}, 409, "not enabled"),
])
def test_refusals_name_their_cause(exact: SimulatorServer, control: dict[str, Any],
                                   payload: dict[str, Any], status: int, cause: str) -> None:
    if control:
        exact.control(**control)
    resp = post(exact, body(**payload))
    assert resp.status_code == status
    assert cause in resp.json()["message"]
    assert resp.json()["error"] == ("OemNotFoundException" if status == 404
                                    else "OemConflictException")
    assert exact.tickets() == []


def test_update_refusals(exact: SimulatorServer) -> None:
    cid = cid_of(post(exact, body()))
    assert "Ticket not found" in post(exact, body("UPDATE", "nope")).json()["message"]
    exact.control(rule={"product_group": "servers", "id": "servers-all", "remove": True})
    assert "Rule was not found" in post(exact, body("UPDATE", cid)).json()["message"]
    exact.control(reset=True, quirks=False)
    cid = cid_of(post(exact, body()))
    exact.control(integration={"remove": True})
    resp = post(exact, body("RESOLVED", cid))
    assert resp.status_code == 404 and "Integration not found" in resp.json()["message"]


def test_suppression_rules_and_both_variants(exact: SimulatorServer) -> None:
    exact.control(suppressions=[{"product_group": "servers", "alert_type": "Disk Space"}])
    resp = post(exact, body(alertType="Disk Space"))
    assert resp.status_code == 200
    assert resp.json() | {"data": None} == {"statusCode": 201, "message": "suppressed",
                                            "data": None}
    exact.control(suppressed_variant="409")
    resp = post(exact, body(alertType="Disk Space"))
    assert resp.status_code == 409 and resp.json()["message"] == "suppressed"
    assert post(exact, body()).status_code == 201  # other alert types still make tickets
    exact.control(suppressions=[{"incident_status": "UPDATE"}], suppressed_variant="200")
    cid = cid_of(post(exact, body(title="other")))
    assert post(exact, body("UPDATE", cid)).json()["message"] == "suppressed"
    assert len(exact.tickets()) == 2


def test_feature_toggles(exact: SimulatorServer) -> None:
    exact.control(features={"ticket_creation": False})
    assert post(exact, body()).json()["message"] == "suppressed"

    exact.control(features={"ticket_creation": True, "deduplication": True})
    first = cid_of(post(exact, body(correlation_id="a")))
    dup = post(exact, body(correlation_id="b"))
    assert dup.status_code == 200 and dup.json()["message"] == "updated"
    assert cid_of(dup) == first == "a"
    (ticket,) = exact.tickets()
    assert ticket["aliases"] == ["b"]
    # The alias reaches the same ticket.
    assert post(exact, body("UPDATE", "b")).json()["message"] == "updated"

    exact.control(features={"self_healing": False})
    resp = post(exact, body("RESOLVED", "a"))
    assert resp.json()["message"] == "updated"
    assert exact.tickets()[0]["status"] == "open"
    assert exact.tickets()[0]["history"][-1]["action"] == "heal-noted"


def test_repeated_resolve_is_closed_again(exact: SimulatorServer) -> None:
    cid = cid_of(post(exact, body()))
    assert post(exact, body("RESOLVED", cid)).json()["message"] == "closed"
    assert post(exact, body("RESOLVED", cid)).json()["message"] == "closed"
    assert len(exact.tickets()[0]["history"]) == 2
    assert post(exact, body("UPDATE", cid)).status_code == 404  # closed: no more appends


def test_bad_requests(psa_sim: SimulatorServer) -> None:
    assert psa_sim.http.post(psa_sim.url + SYNC, content=b"not json").status_code == 400
    assert post(psa_sim, body(incidentStatus="MAYBE")).status_code == 400
    payload = body()
    del payload["data"]["alertType"]
    resp = post(psa_sim, payload)
    assert resp.status_code == 400 and "alertType" in resp.json()["message"]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sim-state.json"
    with SimulatorServer(state_path=state) as sim:
        cid = cid_of(post(sim, body(correlation_id="keep-me")))
        post(sim, body("UPDATE", cid))
    assert state.exists() and not list(tmp_path.glob(".sim-state.json.*"))
    with SimulatorServer(state_path=state) as sim:
        (ticket,) = sim.tickets()
        assert ticket["correlationId"] == "keep-me" and len(ticket["history"]) == 2
        assert ticket["ticketNumber"] == 1001
        cid_of(post(sim, body(title="second")))
        assert sorted(t["ticketNumber"] for t in sim.tickets()) == [1001, 1002]


def test_injected_failures_and_throttling(psa_sim: SimulatorServer) -> None:
    psa_sim.control(fail_next=2, fail_status=503)
    first = post(psa_sim, body())
    assert first.status_code == 503 and first.text == "Service Unavailable"
    assert post(psa_sim, body()).status_code == 503
    assert post(psa_sim, body()).status_code == 201

    psa_sim.control(fail_next=1, fail_status=500)  # the platform's own error body
    resp = post(psa_sim, body())
    assert resp.status_code == 500 and resp.json()["error"] == "OemInternalServerException"

    psa_sim.control(throttle_next=1, retry_after="7")
    resp = post(psa_sim, body())
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert [c["fault"] for c in psa_sim.calls()] == ["fail", "fail", None, "fail", "throttle"]


def test_faults_apply_to_gets_only_when_asked(psa_sim: SimulatorServer) -> None:
    psa_sim.control(fail_next=1, fail_status=502)
    integrations = psa_sim.url + "/api/oem-api/integration/list"
    assert psa_sim.http.get(integrations, headers=CREDS).status_code == 200
    psa_sim.control(applies_to="all")
    assert psa_sim.http.get(integrations, headers=CREDS).status_code == 502


def test_dropped_connection(psa_sim: SimulatorServer) -> None:
    psa_sim.control(drop_next=1)
    with pytest.raises(httpx.RemoteProtocolError):
        post(psa_sim, body())
    assert psa_sim.tickets() == []
    assert post(psa_sim, body()).status_code == 201  # the server is fine afterwards
    assert [c["status"] for c in psa_sim.calls()] == ["dropped", 201]


@pytest.mark.parametrize("mode", ["500", "drop"])
def test_fail_after_apply(psa_sim: SimulatorServer, mode: str) -> None:
    psa_sim.control(fail_after_apply_next=1, fail_after_apply=mode)
    if mode == "drop":
        with pytest.raises(httpx.RemoteProtocolError):
            post(psa_sim, body(correlation_id="ambiguous"))
    else:
        assert post(psa_sim, body(correlation_id="ambiguous")).status_code == 500
    assert [t["correlationId"] for t in psa_sim.tickets()] == ["ambiguous"]  # applied anyway


def test_latency(psa_sim: SimulatorServer) -> None:
    psa_sim.control(latency_ms=150)
    start = time.monotonic()
    assert post(psa_sim, body()).status_code == 201
    assert time.monotonic() - start >= 0.15


def test_control_validates_and_resets(psa_sim: SimulatorServer) -> None:
    with pytest.raises(ValueError, match="unknown"):
        psa_sim.control(no_such_knob=1)
    with pytest.raises(ValueError):
        psa_sim.control(features={"ticket_creation": "maybe"})
    psa_sim.control(latency_ms=5, psa="", features={"self_healing": False})
    post(psa_sim, body())
    state = psa_sim.control(reset=True)
    assert state["faults"]["latency_ms"] == 0 and state["partner"]["psa"]
    assert state["partner"]["features"]["self_healing"] is True
    assert "credentials" not in state["partner"]
    assert psa_sim.calls(None) == [] and psa_sim.tickets() == []


def test_accounts_can_be_added_and_unmapped(exact: SimulatorServer) -> None:
    exact.control(account={"id": "NEW-6", "name": "Newco"})
    assert post(exact, body(accountId="NEW-6")).status_code == 201
    exact.control(account={"id": "ACME-001", "mapped": False})
    assert "not mapped" in post(exact, body()).json()["message"]
