"""Links: a local id's id in each target system."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from stripeflow.core.ledger.database import LedgerDatabase
from stripeflow.core.ledger.schema import LinkRow, utcnow


class Links(LedgerDatabase):
    """Reading and upserting links."""

    def get_link(self, kind: str, local_id: str, target: str) -> str | None:
        with self.session() as s:
            row = s.get(LinkRow, (kind, local_id, target))
            return row.remote_id if row else None

    def get_links(self, kind: str, target: str, local_ids: Iterable[str]) -> dict[str, str]:
        """local id -> its id in the target, for the ones linked."""
        ids = sorted(set(local_ids))
        found: dict[str, str] = {}
        with self.session() as s:
            for start in range(0, len(ids), 500):
                rows = s.execute(
                    select(LinkRow.local_id, LinkRow.remote_id).where(
                        LinkRow.kind == kind,
                        LinkRow.target == target,
                        LinkRow.local_id.in_(ids[start : start + 500]),
                    )
                )
                found.update({local: remote for local, remote in rows})
        return found

    def set_links(
        self, kind: str, target: str, remote_ids: dict[str, str], *, account: str | None = None
    ) -> None:
        """Record many local ids' ids in one target, in one transaction. `account` is written on
        links created here; a link already there keeps the account it was created for."""
        if not remote_ids:
            return
        now = utcnow()
        stmt = self._insert(LinkRow.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["kind", "local_id", "target"],
            set_={"remote_id": stmt.excluded.remote_id, "updated_at": stmt.excluded.updated_at},
        )
        with self.session() as s:
            s.execute(
                stmt,
                [
                    dict(
                        kind=kind,
                        local_id=local,
                        target=target,
                        remote_id=remote,
                        updated_at=now,
                        account=account or self.account,
                    )
                    for local, remote in remote_ids.items()
                ],
            )
