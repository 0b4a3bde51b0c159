"""``python -m gateway.cli``: the clindav command line."""

from gateway.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
