"""A cache of objects fetched from the Stripe API."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from stripeflow.core.ledger.database import LedgerDatabase
from stripeflow.core.ledger.schema import StripeObjectRow, utcnow


class StripeCache(LedgerDatabase):
    """Stripe objects by id, with the time they were fetched."""

    def cached_object(self, object_id: str, max_age: timedelta) -> dict[str, Any] | None:
        with self.session() as s:
            row = s.get(StripeObjectRow, object_id)
            if row is None or row.fetched_at < utcnow() - max_age:
                return None
            return json.loads(row.body)  # type: ignore[no-any-return]

    def cache_object(self, object_id: str, body: dict[str, Any], *, account: str | None = None) -> None:
        """Cache what the Stripe API said of an object, fetched with `account`'s key."""
        account = account or self.account
        with self.session() as s:
            stmt = self._insert(StripeObjectRow.__table__).values(
                object_id=object_id, body=json.dumps(body), fetched_at=utcnow(), account=account
            )
            s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["object_id"],
                    set_={"body": json.dumps(body), "fetched_at": utcnow(), "account": account},
                )
            )
