"""A faithful stand-in for the MSPCentric OEM alerts API (seed 000), for tests and the demo.

The partner's setup comes from a TOML file (partner.py), tickets and their history live in a
ticket book that survives restarts when given a state file (state.py), the platform's rules are
in engine.py, injected faults in faults.py, and the HTTP endpoints in app.py. `run()` serves it
with uvicorn; `create_app()` gives the Starlette app for tests. docs/psa-simulator.md is the
manual.
"""

from bridge.psa_sim.app import create_app
from bridge.psa_sim.partner import DEFAULT_PARTNER, PartnerConfig, PartnerError, load_partner
from bridge.psa_sim.server import build_server, run

__all__ = ["DEFAULT_PARTNER", "PartnerConfig", "PartnerError", "build_server", "create_app",
           "load_partner", "run"]
