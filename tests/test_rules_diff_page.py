"""The `/rules/diff` page's states, rendered (the browser test shows a computed diff), and its
cache: computed once in the background, served until the rule files change."""

from __future__ import annotations

import shutil
import time

from bench import corpus
from bridge.config import load_settings
from bridge.models import RawMessage
from bridge.operator.audit import Redactor
from bridge.operator.rulesdiff_page import CandidateDiff, render_rules_diff
from bridge.store import Store
from tests.helpers import ROOT, write_config

RED = Redactor(["s3cret-token"])


class _NoPsa:
    url = "http://127.0.0.1:9"


def test_the_page_without_a_candidate_says_how_to_configure_one(tmp_path):
    settings = load_settings(write_config(tmp_path, _NoPsa()))
    view = CandidateDiff().view(settings)
    assert view == {"state": "off"}
    assert "[rules] candidate_directory" in render_rules_diff(view, RED)


def test_an_invalid_candidate_and_a_failed_diff_are_told_apart_and_redacted():
    bad = {"state": "ready", "candidate": "/x", "computed_at": time.time(),
           "result": {"valid": False, "problem": "candidate",
                      "errors": ["error: 30-prtg.toml:11: unknown alert type s3cret-token"]}}
    page = render_rules_diff(bad, RED)
    assert "The candidate rules are invalid" in page and "30-prtg.toml:11" in page
    assert "s3cret-token" not in page
    bad["result"] = {"valid": False, "problem": "diff", "errors": ["no store at /y yet"]}
    assert "The diff could not be made" in render_rules_diff(bad, RED)


def test_computed_once_then_served_from_the_cache_until_a_rule_file_changes(tmp_path):
    settings = load_settings(write_config(tmp_path, _NoPsa()))
    candidate = tmp_path / "candidate"
    shutil.copytree(ROOT / "rules", candidate)
    settings = settings.model_copy(update={"rules": settings.rules.model_copy(
        update={"candidate_directory": candidate})})
    cache = CandidateDiff()
    try:
        first = cache.view(settings)
        assert first["state"] == "computing"
        deadline = time.monotonic() + 60
        while (view := cache.view(settings))["state"] != "ready":
            assert time.monotonic() < deadline, view
            time.sleep(0.2)  # polling the background process's result
        # No store yet in this setup: the page says the diff could not be made.
        assert view["result"]["problem"] == "diff"
        assert cache.view(settings)["state"] == "ready"  # no new computation
        rule = candidate / "20-zabbix.toml"
        rule.write_text(rule.read_text() + "\n# touched\n")
        assert cache.view(settings)["state"] == "computing"  # the candidate changed
    finally:
        cache.close()


def test_close_stops_a_diff_still_running(tmp_path):
    settings = load_settings(write_config(tmp_path, _NoPsa()))
    settings = settings.model_copy(update={"rules": settings.rules.model_copy(
        update={"candidate_directory": ROOT / "rules"})})
    now = time.time()
    store = Store(settings.store.path)  # enough mail that the diff runs for seconds
    store.stage_many([RawMessage(m.raw, "imap:alerts", f"1:{i}", m.at) for i, m in
                      enumerate(corpus.backlog(3000, now - 3600, now - 60, seed=5))])
    store.close()
    cache = CandidateDiff()
    assert cache.view(settings)["state"] == "computing"
    cache.close()
    deadline = time.monotonic() + 10
    while "result" not in (view := cache.view(settings)):
        assert time.monotonic() < deadline, view
        time.sleep(0.1)  # polling the watcher thread's result
    assert "ended without a result" in view["result"]["errors"][0]


def test_the_dashboard_links_the_diff_only_when_a_candidate_is_configured(tmp_path):
    from bridge.operator import views
    from bridge.operator.dashboard import render_dashboard

    store = Store(tmp_path / "mb.db")
    data = {"status": views.status_view(store), "messages": [], "tickets": [],
            "failures": {"messages": [], "dead_outbox": []},
            "chart": views.alerts_per_hour(store, 24)}
    assert 'href="/rules/diff"' in render_dashboard(data, RED, candidate=True)
    assert 'href="/rules/diff"' not in render_dashboard(data, RED)
