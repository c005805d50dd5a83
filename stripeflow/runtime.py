"""What a running process needs, built once from settings on first use (never at import).

Flows ask `get_runtime()`; tests and the worker may `set_runtime()` one they built.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

from stripeflow.core.accounts import DEFAULT_ACCOUNT, Account, accounts, settings_for, target_name
from stripeflow.core.config import Settings, load_settings
from stripeflow.core.errors import ConfigError
from stripeflow.core.ledger import Ledger
from stripeflow.tasks.crm import CRM, build_crm
from stripeflow.tasks.stripe.normalise import Lookup, NoLookup


@dataclass
class Runtime:
    """The installation's runtime; `for_account` gives each Stripe account's own (its settings,
    CRMs and Stripe client), sharing the one ledger."""

    settings: Settings
    ledger: Ledger
    account: Account | None = None  # None: the installation's own, as the default account
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _accounts: dict[str, Runtime] = field(default_factory=dict, repr=False)

    @property
    def account_name(self) -> str:
        return self.account.name if self.account is not None else DEFAULT_ACCOUNT

    def for_account(self, name: str | None) -> Runtime:
        """This account's runtime (built once); the installation's own for None or `default`
        when no `[[accounts]]` entry says otherwise."""
        if name is None or name == self.account_name:
            return self
        with self._lock:
            found = self._accounts.get(name)
            if found is None:
                known = accounts(self.settings)
                if name not in known:
                    raise ConfigError(f"no account {name!r}; the accounts are {', '.join(known)}")
                # the same ledger, writing this account's rows (effects, links, dead letters, cache)
                found = Runtime(
                    settings_for(self.settings, known[name]), self.ledger.for_account(name), known[name]
                )
                self._accounts[name] = found
            return found

    @cached_property
    def crms(self) -> list[CRM]:
        built = [
            build_crm(target, self.settings.home, self.settings.language) for target in self.settings.crm
        ]
        for crm in built:
            crm.name = target_name(self.account_name, crm.name)
        return built

    @cached_property
    def lookup(self) -> Lookup:
        if self.settings.stripe.api_key is None:
            return NoLookup()
        from stripeflow.tasks.stripe.client import StripeLookup, make_client, read_limiter

        stripe = self.settings.stripe
        connected = self.account.stripe_account if self.account is not None else None
        return StripeLookup(make_client(stripe, connected), self.ledger, limiter=read_limiter(stripe))

    def close(self) -> None:
        for runtime in [self, *self._accounts.values()]:
            if "crms" in runtime.__dict__:
                for crm in runtime.crms:
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
