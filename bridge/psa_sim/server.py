"""Running the simulator under uvicorn, from the command line or from a test.

`build_server` wires the Starlette app to the uvicorn server that runs it (the simulator needs
the server's connections to drop one on demand); `run` is the blocking entry the
`mailbridge psa-sim` command calls.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import uvicorn
from starlette.applications import Starlette

from bridge.operator.httpserve import event_loop, http_protocol
from bridge.psa_sim.app import create_app
from bridge.psa_sim.faults import attach_server
from bridge.psa_sim.partner import DEFAULT_PARTNER, PartnerConfig, load_partner

log = logging.getLogger(__name__)


def build_server(app: Starlette, host: str = "127.0.0.1", port: int = 8089,
                 log_level: str = "warning",
                 server_class: type[uvicorn.Server] = uvicorn.Server) -> uvicorn.Server:
    # No proxy-header middleware: the simulator is reached directly (and it costs per call).
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="off", timeout_graceful_shutdown=5, proxy_headers=False,
                            http=http_protocol(), loop=event_loop())
    server = server_class(config)
    attach_server(app, server)
    return server


def config_snippet(partner: PartnerConfig, url: str) -> str:
    """The [psa] table to paste into mailbridge's config to talk to this simulator."""
    c = partner.credentials
    integration = partner.integrations[0].id if partner.integrations else "(none in the partner)"
    return "\n".join([
        "# Paste into mailbridge's config.toml to use this simulator:",
        "[psa]", f'base_url = "{url}"', f'client_id = "{c.client_id}"',
        f'client_secret = "{c.client_secret}"',
        f'organization_oem_token = "{c.organization_oem_token}"',
        f'integration_id = "{integration}"'])


def run(host: str = "127.0.0.1", port: int = 8089, partner_path: Path | str | None = None,
        state_path: Path | str | None = None, log_level: str = "info",
        echo: Callable[[str], None] | None = None) -> None:
    """Serve the simulator until SIGINT/SIGTERM. Raises PartnerError for a bad partner file.
    `echo` is told the config snippet to paste first."""
    partner = load_partner(partner_path or DEFAULT_PARTNER)
    if echo is not None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        echo(config_snippet(partner, f"http://{shown}:{port}"))
    app = create_app(partner, Path(state_path) if state_path else None)
    log.info("PSA simulator on http://%s:%d (partner %s, state %s)", host, port,
             partner_path or DEFAULT_PARTNER, state_path or "in memory")
    build_server(app, host, port, log_level).run()
