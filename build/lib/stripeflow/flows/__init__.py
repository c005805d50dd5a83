"""Flows: short recipes of task calls. No HTTP, no vendor names, no try/except here."""
