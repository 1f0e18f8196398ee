"""Running the simulator under uvicorn, from the command line or from a test.

`build_server` wires the Starlette app to the uvicorn server that runs it (the simulator needs
the server's connections to drop one on demand); `run` is the blocking entry the
`mailbridge psa-sim` command calls.
"""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from bridge.psa_sim.app import create_app
from bridge.psa_sim.faults import attach_server
from bridge.psa_sim.partner import DEFAULT_PARTNER, load_partner

log = logging.getLogger(__name__)


def build_server(app: Starlette, host: str = "127.0.0.1", port: int = 8089,
                 log_level: str = "warning",
                 server_class: type[uvicorn.Server] = uvicorn.Server) -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="off", timeout_graceful_shutdown=5)
    server = server_class(config)
    attach_server(app, server)
    return server


def run(host: str = "127.0.0.1", port: int = 8089, partner_path: Path | str | None = None,
        state_path: Path | str | None = None, log_level: str = "info") -> None:
    """Serve the simulator until SIGINT/SIGTERM. Raises PartnerError for a bad partner file."""
    partner = load_partner(partner_path or DEFAULT_PARTNER)
    app = create_app(partner, Path(state_path) if state_path else None)
    log.info("PSA simulator on http://%s:%d (partner %s, state %s)", host, port,
             partner_path or DEFAULT_PARTNER, state_path or "in memory")
    build_server(app, host, port, log_level).run()
