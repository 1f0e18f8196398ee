"""`python -m bridge.cli`: the same as the `mailbridge` command."""

from bridge.cli import main

main()
