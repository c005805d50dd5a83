"""The reusable Prefect task library: one folder per family of systems."""
