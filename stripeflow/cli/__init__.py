"""The `stripeflow` command line."""

from stripeflow.cli.main import app

__all__ = ["app"]
