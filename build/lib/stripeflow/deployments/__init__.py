"""Serving the deployments locally (worker deployments for work pools are in prefect.yaml)."""
