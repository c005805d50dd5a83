"""Prefect Block classes: each system's credentials and settings (secrets as SecretStr).

Register them with `prefect block register -m stripeflow.blocks.crm` (and `.notify`, `.stripe`).
"""
