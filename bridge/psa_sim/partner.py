"""The simulated partner's setup: who may call, and how the partner configured its PSA.

A partner file (TOML) describes one MSP organisation as MSPCentric would hold it: the
credentials it accepts, its integrations (active? alerting enabled?), the feature toggles of
seed 000 (ticket creation, self-healing, de-duplication), the accounts the vendor published and
whether the partner mapped them, the product groups with their alert types and the partner's
rules for them, and status-based suppression rules. The simulator keeps a mutable copy that the
control endpoint changes at run time; `reset` goes back to what the file said.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARTNER = Path(__file__).with_name("default_partner.toml")

IncidentStatus = Literal["OPEN", "UPDATE", "RESOLVED"]


class PartnerError(Exception):
    """A partner file that cannot be used; the message names the file, key and reason."""


class _Model(BaseModel):
    # Mutable on purpose: the control endpoint flips toggles on the live copy.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Credentials(_Model):
    client_id: str
    client_secret: str
    organization_oem_token: str


class Integration(_Model):
    id: str
    name: str = ""
    active: bool = True
    alerting: bool = True


class Features(_Model):
    ticket_creation: bool = True
    self_healing: bool = True
    deduplication: bool = False


class Responses(_Model):
    """How the simulator words its answers (the seed's examples disagree with each other)."""

    # "200": suppressed is HTTP 200 with statusCode 201 (the seed's example);
    # "409": HTTP 409 with message "suppressed" (the seed's error list).
    suppressed_variant: Literal["200", "409"] = "200"
    # Vary `correlationID`/`correlationId`, int/string statusCode and where a 404's cause is
    # written, response by response, so that clients must be liberal in what they accept.
    quirks: bool = True


class Account(_Model):
    id: str
    name: str = ""
    mapped: bool = True


class Rule(_Model):
    """A partner's routing rule: alerts of these types in the group go to this queue."""

    id: str
    enabled: bool = True
    alert_types: list[str] = Field(default_factory=list)  # empty: every alert type
    queue: str = "Alerts"
    priority: str = "Medium"

    def covers(self, alert_type: str) -> bool:
        return not self.alert_types or alert_type in self.alert_types


class ProductGroup(_Model):
    name: str
    alert_types: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


class Suppression(_Model):
    """Suppress matching alerts (no ticket, no change). Every field given must match."""

    product_group: str | None = None
    alert_type: str | None = None
    incident_status: IncidentStatus | None = None
    account_id: str | None = None

    def matches(self, *, product_group: str, alert_type: str, incident_status: str,
                account_id: str) -> bool:
        wanted = {"product_group": product_group, "alert_type": alert_type,
                  "incident_status": incident_status, "account_id": account_id}
        return all(getattr(self, k) is None or getattr(self, k) == v for k, v in wanted.items())


class PartnerConfig(_Model):
    # Empty means "No PSA found on the organization" (every sync answers 404).
    psa: str = "ConnectWise Manage"
    credentials: Credentials
    features: Features = Field(default_factory=Features)
    responses: Responses = Field(default_factory=Responses)
    integrations: list[Integration] = Field(default_factory=list)
    accounts: list[Account] = Field(default_factory=list)
    product_groups: list[ProductGroup] = Field(default_factory=list)
    suppressions: list[Suppression] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> PartnerConfig:
        for what, ids in (("integration", [i.id for i in self.integrations]),
                          ("account", [a.id for a in self.accounts]),
                          ("product group", [g.name for g in self.product_groups])):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{what} {dupes[0]!r} is listed twice")
        return self

    def integration(self, integration_id: str) -> Integration | None:
        return next((i for i in self.integrations if i.id == integration_id), None)

    def account(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.id == account_id), None)

    def product_group(self, name: str) -> ProductGroup | None:
        return next((g for g in self.product_groups if g.name == name), None)


def load_partner(path: Path | str = DEFAULT_PARTNER) -> PartnerConfig:
    """Read and validate a partner file; errors name the file, the dotted key and the reason."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PartnerError(f"{path}: partner file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise PartnerError(f"{path}: {exc}") from None
    try:
        return PartnerConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: invalid partner file"]
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {key}: {msg}")
        raise PartnerError("\n".join(lines)) from None
