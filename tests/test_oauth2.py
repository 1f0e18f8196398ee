"""bridge.auth.oauth2 against a real (local) token endpoint, and the XOAUTH2 string against Google's
published example. The end-to-end XOAUTH2 login against Dovecot is in test_imap_source.py.
"""

from __future__ import annotations

import base64
from typing import Iterator

import pytest

from bridge.auth.oauth2 import OAuth2Error, TokenProvider, xoauth2_string
from bridge.config import OAuth2Settings
from tests.fixtures.dovecot import OAuthServer, free_port

SECRET = "cl1ent-s3cret-value"
REFRESH = "r3fresh-t0ken-value"


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    server = OAuthServer(issue=["token-1", "token-2", "token-3"])
    yield server
    server.close()


def settings(server: OAuthServer, **overrides: object) -> OAuth2Settings:
    values: dict[str, object] = {"token_url": server.token_url, "client_id": "mailbridge",
                                 "client_secret": SECRET,
                                 "scope": "https://outlook.office365.com/.default"}
    values |= overrides
    return OAuth2Settings(**values)  # type: ignore[arg-type]


def test_xoauth2_string_matches_googles_example() -> None:
    # developers.google.com/gmail/imap/xoauth2-protocol, "Initial client response".
    text = xoauth2_string("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    assert text == ("user=someuser@example.com\x01auth=Bearer "
                    "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01")
    encoded = base64.b64encode(text.encode()).decode()
    assert encoded.startswith("dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxb")


async def test_client_credentials_grant_and_caching(oauth: OAuthServer) -> None:
    provider = TokenProvider(settings(oauth))
    assert await provider.token() == "token-1"
    assert await provider.token() == "token-1"  # cached: still valid for an hour
    assert len(oauth.token_requests) == 1
    assert oauth.token_requests[0] == {
        "grant_type": "client_credentials", "client_id": "mailbridge", "client_secret": SECRET,
        "scope": "https://outlook.office365.com/.default"}


async def test_refresh_token_grant(oauth: OAuthServer) -> None:
    provider = TokenProvider(settings(oauth, refresh_token=REFRESH, client_secret=None,
                                      scope="https://mail.google.com/"))
    assert await provider.token() == "token-1"
    assert oauth.token_requests[0] == {"grant_type": "refresh_token", "refresh_token": REFRESH,
                                       "client_id": "mailbridge", "scope": "https://mail.google.com/"}


async def test_expiring_token_is_renewed_and_invalidate_forces_a_new_one(oauth: OAuthServer) -> None:
    oauth.expires_in = 30  # inside the provider's 60 s safety margin: already "expiring"
    provider = TokenProvider(settings(oauth))
    assert [await provider.token(), await provider.token()] == ["token-1", "token-2"]

    oauth.expires_in = 3600
    provider = TokenProvider(settings(oauth))
    assert await provider.token() == "token-3"
    provider.invalidate()  # what the IMAP source does after the server refused the token
    await provider.token()
    assert len(oauth.token_requests) == 4


async def test_errors_name_the_endpoint_but_never_a_secret(oauth: OAuthServer) -> None:
    oauth.token_status = 401
    provider = TokenProvider(settings(oauth, refresh_token=REFRESH))
    with pytest.raises(OAuth2Error, match="HTTP 401") as info:
        await provider.token()
    assert SECRET not in str(info.value) and REFRESH not in str(info.value)

    dead = OAuth2Settings(token_url=f"http://127.0.0.1:{free_port()}/token", client_id="x",
                          client_secret=SECRET)
    with pytest.raises(OAuth2Error, match="unreachable") as info:
        await TokenProvider(dead).token()
    assert SECRET not in str(info.value)


async def test_answer_without_access_token_is_an_error(oauth: OAuthServer) -> None:
    provider = TokenProvider(settings(oauth, token_url=oauth.token_url.replace("/token", "/nope")))
    with pytest.raises(OAuth2Error):
        await provider.token()
