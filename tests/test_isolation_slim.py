"""What a worker sends back per message (`isolation._slim`): what `apply` reads, and for
`simulate` (`detail`) what its report shows; never the body."""

from __future__ import annotations

import pickle

from bridge.models import Alert, Classification, ExpectHit, Kind, ParsedMessage
from bridge.parse.mime import parse
from bridge.process.isolation import _slim
from bridge.process.pipeline import Evaluation

RAW = (b"From: Zabbix <zabbix@mon.example>\r\nTo: alerts@msp.example\r\n"
       b"Subject: PROBLEM: disk full on fs01\r\nMessage-ID: <1@mon.example>\r\n"
       b"Date: Sat, 05 Dec 2026 03:42:37 GMT\r\nReceived: from mon.example by mx\r\n\r\n"
       b"Host: fs01\r\nTrigger: disk full\r\n")
HIT = ExpectHit("nightly", "ACME:disk", "ACME", "a report")


def evaluation(summary: str = "disk full") -> Evaluation:
    alert = Alert("ACME:disk", "open", "ACME", "servers", "Disk", "fs01: disk full", summary)
    c = Classification(Kind.ALERT, "open alert", "zabbix.toml:disk", alert,
                       account_how="from the subject", steps=("detect: matched", "key: ..."),
                       expected=(HIT,))
    return Evaluation(parse(RAW), c)


def test_run_gets_what_apply_reads_and_nothing_else() -> None:
    ev = evaluation()
    slim = _slim(ev, 1 << 20)
    p = slim.parsed
    assert (p.subject, p.sender, p.message_id) == (
        "PROBLEM: disk full on fs01", "zabbix@mon.example", "<1@mon.example>")
    assert p == ParsedMessage(subject=p.subject, sender=p.sender, message_id=p.message_id)
    c = slim.classification
    assert c is not None and c.steps == ()
    assert c == Classification(Kind.ALERT, "open alert", "zabbix.toml:disk",
                               ev.classification.alert if ev.classification else None,
                               account_how="from the subject", expected=(HIT,))
    assert len(pickle.dumps(slim)) < len(pickle.dumps(_slim(ev, 1 << 20, detail=True))) * 0.8


def test_simulate_gets_the_steps_and_every_header_but_no_body() -> None:
    ev = evaluation()
    slim = _slim(ev, 1 << 20, detail=True)
    assert slim.parsed.headers == ev.parsed.headers and slim.parsed.trace == ev.parsed.trace
    assert slim.parsed.body == "" and ev.parsed.body
    assert slim.classification == ev.classification


def test_a_long_summary_is_cut_and_the_expectations_stay() -> None:
    slim = _slim(evaluation("x" * 5000), 1000)
    c = slim.classification
    assert c is not None and c.alert is not None
    assert len(c.alert.summary) == 1000 and c.alert.title == "fs01: disk full"[:125]
    assert c.expected == (HIT,)


def test_chunks_stay_well_inside_the_wall_budget() -> None:
    from bridge.process.isolation import CHUNK_FIRST, CHUNK_MAX, chunk_size

    assert chunk_size(200, 1, 5.0, None) == CHUNK_FIRST  # nothing timed yet
    assert chunk_size(200, 1, 5.0, 0.0005) == CHUNK_MAX == 200  # ordinary alerts: one task
    assert chunk_size(200, 4, 5.0, 0.0005) == 50  # every worker gets a share
    assert chunk_size(200, 1, 5.0, 0.05) == 5  # slow mail: 0.25 s of a 5 s budget per task
    assert chunk_size(200, 1, 5.0, 30.0) == 1 and chunk_size(3, 8, 5.0, 0.0) == 1
