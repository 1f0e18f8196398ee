"""`mailbridge check`: config, rules and accounts offline; with --online every peer too.

Every problem names the file and line (or the key, or the rule) and what is wrong. Exit 0 when
there are no errors (warnings are printed but do not fail), 1 otherwise.
"""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any, Callable

from bridge.config import ConfigError, Settings, load_settings

# Offline, a secret the user cannot read is not a fault of the config: the service gets it.
SECRET_WARNING = "loaded by systemd when the service starts; not checked now"


def config_problems(settings: Settings) -> list[str]:
    """Cross-key checks pydantic cannot see alone."""
    out: list[str] = []
    r, s = settings.routing, settings.storm
    from bridge.classify.safety import forward_loop_problems

    out += forward_loop_problems(settings)
    groups = settings.catalogue_map()
    if s.storm_product_group or s.storm_alert_type:
        if s.storm_product_group not in groups:
            out.append(f"storm.storm_product_group: {s.storm_product_group!r} is not in the"
                       " catalogue")
        elif s.storm_alert_type not in groups[s.storm_product_group]:
            out.append(f"storm.storm_alert_type: {s.storm_alert_type!r} is not an alert type"
                       f" of {s.storm_product_group!r}")
    if (r.internal_address or r.regular_mail == "forward") and settings.smtp is None:
        out.append("smtp: forwarding is configured (routing) but there is no [smtp] section")
    if settings.xml_api.enabled and settings.xml_api.password is None:
        out.append("xml_api.password: XML transactions are enabled without a password:"
                   " anyone who can send mail can change tickets")
    return out


def exposure_warnings(settings: Settings) -> list[str]:
    """What is reachable or readable by more than the administrator (docs/hardening.md)."""
    from bridge.operator.web import is_loopback
    from bridge.store.files import readable_by_others

    out: list[str] = []
    h = settings.http
    if h.enabled and not is_loopback(h.host):
        allowed = ", ".join(h.allowed_hosts) or "loopback names only"
        out.append(f"http.host: {h.host} is not a loopback address: the dashboard, /healthz and"
                   f" /metrics can be reached from the network (they answer to Host: {allowed})")
    for name in readable_by_others(settings.store.path):
        out.append(f"store.path: {name} can be read by other users (it holds every raw mail):"
                   " chmod 600 it")
    return out


def check_config_file(path: str | Path, online: bool = False,
                      echo: Callable[[str], None] = print,
                      err: Callable[[str], None] | None = None) -> int:
    """`mailbridge check`: config, accounts and rules in one pass (a broken config does not
    hide the rule errors), then with --online every peer. Offline, a secret that cannot be
    read is a warning; online it is an error that names the file."""
    unread: list[str] = []
    try:
        settings = load_settings(path, lenient_secrets=False if online else unread)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            (err or echo)(f"config: {line.strip()}")
        errors = 1 + _rules_of_unloadable(Path(path), echo)
        echo(f"check: {errors} error(s)")
        return 1
    for why in unread:
        echo(f"warning: {why} — {SECRET_WARNING}")
    return run_checks(settings, online=online, echo=echo)


def _rules_of_unloadable(path: Path, echo: Callable[[str], None]) -> int:
    """The rule files of a config that did not validate, checked from its raw [rules] and
    [[catalogue]] tables as far as those are readable."""
    from bridge.classify.loader import check_ruleset

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return 0  # the config error above says so
    table = data.get("rules")
    rules: dict[str, object] = table if isinstance(table, dict) else {}
    base = path.parent
    directory = base / str(rules.get("directory", "rules"))
    accounts = base / str(rules["accounts"]) if isinstance(rules.get("accounts"), str) else None
    catalogue = {str(g["name"]): frozenset(map(str, g.get("alert_types", [])))
                 for g in data.get("catalogue", []) if isinstance(g, dict) and "name" in g}
    errors = 0
    for p in check_ruleset(directory, accounts, catalogue):
        echo(f"{p.severity}: {p}")
        errors += p.is_error
    return errors


def run_checks(settings: Settings, online: bool = False,
               echo: Callable[[str], None] = print) -> int:
    from bridge.classify.loader import check_ruleset

    errors = 0
    for problem in config_problems(settings):
        echo(f"config: {problem}")
        errors += 1
    for warning in exposure_warnings(settings):
        echo(f"warning: {warning}")
    for hook in settings.webhook:
        from bridge.deliver.webhook import WebhookConfigError, WebhookTarget

        try:
            WebhookTarget(hook)
        except WebhookConfigError as exc:
            echo(f"config: webhook.{hook.name}: {exc}")
            errors += 1
    from bridge.classify.rulepacks import PackSelection

    problems = check_ruleset(settings.rules.directory, settings.rules.accounts,
                             settings.catalogue_map(), PackSelection.from_settings(settings))
    for p in problems:
        echo(f"{p.severity}: {p}")
        errors += p.is_error
    for warning in [*auth_warnings(settings), *pack_warnings(settings)]:
        echo(f"warning: {warning}")
    if online:
        for name, ok, detail in asyncio.run(_online(settings)):
            echo(f"online: {name}: {'yes' if ok else 'NO'} — {detail}")
            errors += 0 if ok else 1
    echo("check: OK" if errors == 0 else f"check: {errors} error(s)")
    return 0 if errors == 0 else 1


def auth_warnings(settings: Settings) -> list[str]:
    """With [auth] configured, every detect rule that can resolve without requiring
    authentication: its resolves are refused only when our MX's results fail (issue 14)."""
    from bridge.assembly import load_rules
    from bridge.classify.loader import RuleSetError

    if not settings.auth.authserv_ids:
        return []
    try:
        ruleset = load_rules(settings)
    except RuleSetError:
        return []  # the errors are reported above
    return [f"{rule.label}: can resolve tickets without require_authentication; a resolve is "
            "refused only when a trusted Authentication-Results fails for its sender, so mail "
            "without one still resolves" for rule in ruleset.detect.rules
            if rule.can_resolve and not rule.require_authentication]


def pack_warnings(settings: Settings) -> list[str]:
    """Packs require authentication unless mapped otherwise: without [auth] or a trusted
    relay every mail of such a pack would be rejected (docs/packs.md)."""
    if settings.auth.authserv_ids or settings.auth.trusted_relays:
        return []
    return [f"packs.{name}: the pack requires authentication but [auth] names no authserv-id "
            "or trusted relay, so its mail is rejected; configure [auth] or set "
            f"[packs.{name}] require_authentication = false" for name in settings.rules.packs
            if (m := settings.packs.get(name)) is None or m.require_authentication is not False]


async def _online(settings: Settings) -> list[tuple[str, bool, str]]:
    from bridge.operator.audit import Redactor

    # Servers echo what they were sent (an IMAP NO may quote the LOGIN line): every line that
    # came back from a peer passes the redactor before it is printed.
    redact = Redactor(settings.secrets()).redact
    return [(name, ok, redact(detail)) for name, ok, detail in await _online_raw(settings)]


async def _online_raw(settings: Settings) -> list[tuple[str, bool, str]]:
    from bridge.operator.status import RuntimeStatus
    from bridge.sources import build_sources
    from bridge.sources.imap import ImapSource

    async def no_stage(msgs: list[Any]) -> list[bool]:
        return [False] * len(msgs)

    results: list[tuple[str, bool, str]] = []
    # The sources the daemon would build, asked to log in and nothing more.
    for source in build_sources(settings, no_stage, RuntimeStatus()):
        if isinstance(source, ImapSource):
            imap = source.settings
            results.append(await _probe(f"IMAP {imap.name} ({imap.host}:{imap.port})",
                                        source.check()))
    from bridge.assembly import build_peers

    peers = build_peers(settings)  # the very clients the daemon would use
    try:
        if settings.smtp is not None and peers.smtp is not None:
            results.append(await _probe(f"SMTP {settings.smtp.host}:{settings.smtp.port}",
                                        peers.smtp.check()))
        if peers.psa is not None:
            st = await peers.psa.integration_status()
            ok = st.reachable and st.authorized and st.alerting_enabled
            results.append((f"PSA {settings.psa.base_url}", ok, st.message))
    finally:
        await peers.aclose()
    return results


async def _probe(name: str, coro: Any) -> tuple[str, bool, str]:
    try:
        return name, True, str(await asyncio.wait_for(coro, 60))
    except Exception as exc:
        return name, False, f"{type(exc).__name__}: {exc}"
