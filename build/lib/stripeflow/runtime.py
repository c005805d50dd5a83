"""What a running process needs, built once from settings on first use (never at import).

Flows ask `get_runtime()`; tests and the worker may `set_runtime()` one they built.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

from stripeflow.core.config import Settings, load_settings
from stripeflow.core.ledger import Ledger
from stripeflow.tasks.crm import CRM, build_crm
from stripeflow.tasks.stripe.normalise import Lookup, NoLookup


@dataclass
class Runtime:
    settings: Settings
    ledger: Ledger
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def crms(self) -> list[CRM]:
        return [build_crm(target, self.settings.home) for target in self.settings.crm]

    @cached_property
    def lookup(self) -> Lookup:
        if self.settings.stripe.api_key is None:
            return NoLookup()
        from stripeflow.tasks.stripe.client import StripeLookup, make_client, read_limiter

        stripe = self.settings.stripe
        return StripeLookup(make_client(stripe), self.ledger, limiter=read_limiter(stripe))

    def close(self) -> None:
        if "crms" in self.__dict__:
            for crm in self.crms:
                crm.close()
        self.ledger.dispose()


_current: Runtime | None = None
_lock = threading.Lock()


def build_runtime(settings: Settings | None = None) -> Runtime:
    from stripeflow.blocks.stripe import with_stripe_block

    settings = with_stripe_block(settings or load_settings())
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    return Runtime(settings=settings, ledger=ledger)


def get_runtime() -> Runtime:
    global _current
    with _lock:
        if _current is None:
            _current = build_runtime()
        return _current


def set_runtime(runtime: Runtime | None) -> None:
    global _current
    with _lock:
        _current = runtime
