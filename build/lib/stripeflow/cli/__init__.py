"""The `stripeflow` command line."""

from __future__ import annotations

import sys

from stripeflow.cli.main import app
from stripeflow.core.errors import ConfigError


def main() -> None:
    """Entry point: a configuration error is one clear message, not a traceback."""
    try:
        app()
    except ConfigError as exc:
        print(f"stripeflow: {exc}", file=sys.stderr)
        sys.exit(2)


__all__ = ["app", "main"]
