"""CRM adapters, one module each, behind `stripeflow.tasks.crm.base.CRM`.

`build_crm` picks the adapter a `CRMTarget` names. Adding a CRM adds one line to `ADAPTERS`
(a lazy import path, so an unused vendor's code is never loaded).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from stripeflow.core.config import CRMTarget
from stripeflow.core.errors import ConfigError
from stripeflow.tasks.crm.base import CRM, ContactInput, DealInput, NoteInput

ADAPTERS: dict[str, str] = {
    "local": "stripeflow.tasks.crm.local:LocalCRM",
    "hubspot": "stripeflow.tasks.crm.hubspot:HubSpotCRM",
    "pipedrive": "stripeflow.tasks.crm.pipedrive:PipedriveCRM",
    "bitrix24": "stripeflow.tasks.crm.bitrix24:Bitrix24CRM",
    "zoho": "stripeflow.tasks.crm.zoho:ZohoCRM",
}


def build_crm(target: CRMTarget, home: Path, language: str = "pl") -> CRM:
    """The adapter for one configured target, built from its block or settings (no globals);
    `language` is the account's, for the labels of what `crm setup` creates."""
    path = ADAPTERS.get(target.type)
    if path is None:
        raise ConfigError(
            f"crm.type {target.type!r} is not known; choose one of {', '.join(sorted(ADAPTERS))}"
        )
    module, cls = path.split(":")
    adapter = getattr(importlib.import_module(module), cls)
    if target.type == "local":
        return adapter.from_target(target, home)  # type: ignore[no-any-return]
    return adapter.from_target(target, home, language=language)  # type: ignore[no-any-return]


__all__ = ["ADAPTERS", "CRM", "ContactInput", "DealInput", "NoteInput", "build_crm"]
