"""`python -m bridge` is the same as the `mailbridge` command."""

from bridge.cli import main

if __name__ == "__main__":
    main()
