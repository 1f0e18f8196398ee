"""The TOML config file -> validated, immutable settings.

One pydantic model per section. Unknown keys are errors (a typo must not be silently ignored),
and every error names the dotted key and the reason. Secrets may be written inline, or as
`{ env = "NAME" }`, `{ file = "PATH" }` or `{ credential = "psa-client-secret" }` (systemd
`LoadCredential=`: `$CREDENTIALS_DIRECTORY/NAME` in the service, the `credentials/` directory
beside the config outside it); they are held as `SecretStr`, so they never print.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError,
                      field_validator, model_validator)

from bridge.auth.secrets import CONFIG_DIR, LENIENT_SECRETS, resolve_secret


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file, key and reason."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A SecretStr that also accepts the env/file forms.
SecretField = Annotated[SecretStr, BeforeValidator(resolve_secret)]


class StoreSettings(Section):
    path: Path = Path("mailbridge.db")
    retention_days: int = Field(30, ge=1)
    correlation_retention_days: int = Field(90, ge=1)
    disk_warn_mb: int = Field(1024, ge=1)


class OAuth2Settings(Section):
    """Where to obtain an access token (Microsoft 365, Gmail, a webhook target)."""

    token_url: str
    client_id: str
    client_secret: SecretField | None = None
    refresh_token: SecretField | None = None
    scope: str | None = None


class ImapSettings(Section):
    name: str = "inbox"
    host: str
    port: int = 993
    security: Literal["tls", "starttls", "none"] = "tls"
    ca_file: Path | None = None
    username: str
    password: SecretField | None = None
    oauth2: OAuth2Settings | None = None
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    quarantine_folder: str | None = None
    idle: bool = True
    poll_interval: float = Field(60.0, gt=0)
    reidle_interval: float = Field(25 * 60.0, gt=0)
    timeout: float = Field(30.0, gt=0)
    batch_size: int = Field(200, ge=1, le=500)
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)


class MaildirSettings(Section):
    name: str = "maildir"
    path: Path
    poll_interval: float = Field(2.0, gt=0)
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)


class SmtpSettings(Section):
    host: str = "localhost"
    port: int = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    ca_file: Path | None = None
    username: str | None = None
    password: SecretField | None = None
    oauth2: OAuth2Settings | None = None
    timeout: float = Field(30.0, gt=0)
    from_address: str = "mailbridge@localhost"


class PsaSettings(Section):
    base_url: str = "http://127.0.0.1:8089"
    client_id: str = ""
    client_secret: SecretField = SecretStr("")
    organization_oem_token: SecretField = SecretStr("")
    integration_id: str = ""
    grant_type: str = "client_credentials"
    scope: str = "vendor_manage"
    timeout: float = Field(15.0, gt=0)
    rate_limit: float = Field(10.0, gt=0, description="requests per second")
    concurrency: int = Field(4, ge=1, le=64)
    summary_max_chars: int = Field(8000, ge=100)
    enabled: bool = True


class WebhookAuth(Section):
    type: Literal["none", "basic", "oauth2"] = "none"
    username: str | None = None
    password: SecretField | None = None
    oauth2: OAuth2Settings | None = None


class WebhookSettings(Section):
    name: str = "webhook"
    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = {}
    payload: str
    auth: WebhookAuth = WebhookAuth()
    timeout: float = Field(15.0, gt=0)


class ProductGroup(Section):
    name: str
    alert_types: list[str]


class RulesSettings(Section):
    directory: Path = Path("rules")
    accounts: Path | None = None
    watch: bool = True
    # A rule directory under review: the dashboard shows what it would change (`rules diff`).
    candidate_directory: Path | None = None
    # Rule packs shipped in the package (docs/packs.md), read after the rule files, in order.
    packs: list[str] = []


class PackSettings(Section):
    """`[packs.<name>]`: one pack fitted onto this MSP's catalogue and senders."""

    # One product group for the whole pack, or a map from the pack's neutral names.
    product_group: str | dict[str, str] | None = None
    alert_types: dict[str, str] = {}
    senders: list[str] | None = None  # replace the tool's usual senders
    account: dict[str, Any] | list[dict[str, Any]] | None = None  # as [[tool]] account
    require_authentication: bool | None = None


class RoutingSettings(Section):
    """Where mail that does not become a ticket goes (SPEC §3.4 steps 2, 3, 5)."""

    internal_address: str | None = None
    admin_address: str | None = None
    regular_mail: Literal["leave", "move", "forward"] = "leave"
    regular_folder: str = "Regular"
    regular_forward_to: str | None = None
    own_addresses: list[str] = []
    # When (local HH:MM) the admin gets the daily digest of creates the PSA refused with 404;
    # "" for none. Nothing is sent without [smtp] and admin_address (docs/health.md).
    digest_time: str = "08:00"

    @field_validator("digest_time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        if value and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f"{value!r} is not a time of day HH:MM (or \"\" for no digest)")
        return value


class StormSettings(Section):
    """Storm control (docs/storm.md says why each default is what it is)."""

    coalesce_window: float = Field(300.0, ge=0)
    resolve_delay: float = Field(120.0, ge=0)
    account_cap: int = Field(10, ge=1)
    account_window: float = Field(60.0, gt=0)
    global_cap: int = Field(100, ge=1)
    # A group (account) bursts when more than `burst_threshold` new alerts arrived within
    # `burst_window`; its further new alerts then wait `group_wait` so a storm can take them.
    burst_threshold: int = Field(3, ge=1)
    burst_window: float = Field(30.0, gt=0)
    group_wait: float = Field(30.0, ge=0)
    # The storm group: one storm ticket per account, or per account and product group.
    storm_group: Literal["account", "product_group"] = "account"
    storm_product_group: str | None = None
    storm_alert_type: str | None = None
    reopen: Literal["new", "append"] = "new"
    max_open_age_days: float = Field(30.0, gt=0)


class XmlApiSettings(Section):
    enabled: bool = False
    password: SecretField | None = None
    responses: bool = True
    bcc: str | None = None
    max_bytes: int = Field(1024 * 1024, ge=1024)
    response_rate_per_hour: int = Field(60, ge=1)


class AtesSettings(Section):
    sources: list[str] = []  # token sources whose mail counts as automated on its own
    id: str | None = None
    password: SecretField | None = None


class AuthSettings(Section):
    """Sender authenticity (SPEC §3.7a)."""

    authserv_ids: list[str] = []
    trusted_relays: list[str] = []
    # `by` hosts of our own Received headers (RFC 8601 §5 boundary); empty: the authserv-ids.
    trusted_hosts: list[str] = []


class HttpSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8025, ge=0, le=65535)
    vendor_api_key: SecretField | None = None
    # Host names the dashboard and /metrics answer to besides loopback ones (DNS rebinding).
    allowed_hosts: list[str] = []
    max_connections: int = Field(100, ge=1)
    header_timeout: float = Field(10.0, gt=0)
    keepalive_timeout: float = Field(5.0, gt=0)


class LogSettings(Section):
    format: Literal["auto", "human", "json"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ProcessingSettings(Section):
    """The budget of the worker processes that read untrusted bytes (docs/hardening.md)."""

    # One core stays with the daemon itself (staging, deciding, delivery): on 2 cores one
    # worker drains a backlog as fast as two and holds ~19 MiB less (docs/performance.md).
    workers: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 1) - 1), ge=1,
                         le=64)
    wall_seconds: float = Field(5.0, gt=0)
    memory_mb: int = Field(512, ge=64)  # address space a worker may add while it works
    text_chars: int = Field(1024 * 1024, ge=1024)


class Settings(Section):
    store: StoreSettings = StoreSettings()
    processing: ProcessingSettings = ProcessingSettings()
    imap: list[ImapSettings] = []
    maildir: list[MaildirSettings] = []
    smtp: SmtpSettings | None = None
    psa: PsaSettings = PsaSettings()
    webhook: list[WebhookSettings] = []
    catalogue: list[ProductGroup] = []
    rules: RulesSettings = RulesSettings()
    packs: dict[str, PackSettings] = {}
    routing: RoutingSettings = RoutingSettings()
    storm: StormSettings = StormSettings()
    xml_api: XmlApiSettings = XmlApiSettings()
    ates: AtesSettings = AtesSettings()
    auth: AuthSettings = AuthSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()

    @field_validator("catalogue")
    @classmethod
    def _unique_groups(cls, groups: list[ProductGroup]) -> list[ProductGroup]:
        seen: set[str] = set()
        for group in groups:
            if group.name in seen:
                raise ValueError(f"product group {group.name!r} is listed twice")
            seen.add(group.name)
        return groups

    @model_validator(mode="after")
    def _no_mail_to_ourselves(self) -> "Settings":
        # A forward to the mailbox we read comes straight back: refused here, so `run` does
        # not start with such a config (`check` reports the same lines).
        from bridge.classify.safety import forward_loop_problems

        problems = forward_loop_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def catalogue_map(self) -> dict[str, frozenset[str]]:
        return {g.name: frozenset(g.alert_types) for g in self.catalogue}

    def secrets(self) -> list[str]:
        """Every secret value in the config, for log redaction."""
        found: list[str] = []

        def walk(obj: Any) -> None:
            if isinstance(obj, SecretStr):
                value = obj.get_secret_value()
                if value:
                    found.append(value)
            elif isinstance(obj, BaseModel):
                for name in type(obj).model_fields:
                    walk(getattr(obj, name))
            elif isinstance(obj, (list, tuple)):
                for item in obj:
                    walk(item)

        walk(self)
        return found


def _format_errors(path: Path | str, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")  # pydantic's prefix says nothing
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_settings(path: Path | str, base_dir: Path | None = None,
                  lenient_secrets: bool | list[str] = False) -> Settings:
    """Read and validate a config file. Relative paths in it are relative to the file.

    With `lenient_secrets`, a secret whose env variable or file is missing becomes empty
    instead of an error (for `ingest`, which only stages); given a list, why each secret could
    not be read is appended to it (for offline `check`, which warns)."""
    unread = lenient_secrets if isinstance(lenient_secrets, list) else (
        [] if lenient_secrets else None)
    token = LENIENT_SECRETS.set(unread)
    where = CONFIG_DIR.set(Path(path).parent.absolute())
    try:
        return _load_settings(Path(path), base_dir)
    finally:
        LENIENT_SECRETS.reset(token)
        CONFIG_DIR.reset(where)


def _load_settings(path: Path, base_dir: Path | None) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:  # e.g. run as a user outside the config's group
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return settings_from_dict(data, source=path, base_dir=base_dir or path.parent)


def settings_from_dict(data: dict[str, Any], source: Path | str = "<config>",
                       base_dir: Path | None = None) -> Settings:
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    if base_dir is not None:
        settings = _anchor_paths(settings, base_dir)
    return settings


def _anchor_paths(settings: Settings, base: Path) -> Settings:
    def anchor(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p)

    return settings.model_copy(update={
        "store": settings.store.model_copy(update={"path": anchor(settings.store.path)}),
        "rules": settings.rules.model_copy(update={
            "directory": anchor(settings.rules.directory),
            "accounts": anchor(settings.rules.accounts),
            "candidate_directory": anchor(settings.rules.candidate_directory),
        }),
        "maildir": [m.model_copy(update={"path": anchor(m.path)}) for m in settings.maildir],
    })
