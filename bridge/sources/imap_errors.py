"""What the IMAP source raises (each message safe to show and log), and the settings it refuses
before connecting at all."""

from __future__ import annotations

import ipaddress

from bridge.config import ImapSettings


class ImapError(Exception):
    """The IMAP source could not do its work; the message is safe to show and log."""


class ImapConfigError(ImapError):
    """The settings cannot work (e.g. plain text to a remote host)."""


class ImapAuthError(ImapError):
    """The server refused the credentials (password or OAuth2 token)."""


class ImapTimeout(ImapError):
    pass


class ImapConnectionLost(ImapError):
    pass


def is_loopback(host: str) -> bool:
    """Plain text is allowed to these hosts only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_settings(s: ImapSettings, oauth2: bool) -> None:
    """Raise `ImapConfigError` for settings that cannot work, before anything is sent."""
    if s.security == "none" and not is_loopback(s.host):
        raise ImapConfigError(
            f"security = \"none\" sends the password in clear text: only allowed to a "
            f"loopback address, not {s.host}; use \"tls\" or \"starttls\"")
    if s.password is None and not oauth2:
        raise ImapConfigError("neither a password nor OAuth2 settings are configured")
