"""Effects: one row per side effect, claimed -> (attempting) -> settled, so each happens once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from stripeflow.core.ledger.database import LedgerDatabase
from stripeflow.core.ledger.schema import DeadLetterRow, EffectRow, utcnow


class EffectItem(Protocol):
    """Anything that names one side effect: its key and what it is about."""

    @property
    def key(self) -> str: ...
    @property
    def payment_id(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def action(self) -> str: ...


class EffectOutcome(Protocol):
    """How a claimed effect ended: done | unknown | failed | release."""

    @property
    def item(self) -> EffectItem: ...
    @property
    def status(self) -> str: ...
    @property
    def result(self) -> str: ...
    @property
    def claimed(self) -> bool: ...


class Effects(LedgerDatabase):
    """The lifecycle of side effects, keyed so each happens once."""

    # claim -> (attempt) -> act -> settle:
    #
    #   claimed     the key is taken; the target has not been called. Left so by a dead attempt,
    #               it is safe to redo: `claim_effects` takes it over.
    #   attempting  the call is about to be made (`mark_attempting`). Left so, the outcome is
    #               unknown: `take_over_attempting` hands it to a caller that looks at the target
    #               (or redoes it where the target dedupes by our key).
    #   done | unknown | failed   settled. `failed` carries a dead letter naming the effect.
    #
    # A payment's sinks run only while its run holds the payment's lease, so a claim held by
    # another token belongs to an attempt that is no longer running.

    SETTLED = ("done", "unknown", "failed")

    def effect_states(self, keys: Iterable[str]) -> dict[str, str]:
        """key -> status, for the keys that have a row."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        with self.session() as s:
            return dict(
                s.execute(select(EffectRow.key, EffectRow.status).where(EffectRow.key.in_(keys))).all()
            )  # type: ignore[arg-type]

    def effect_claimed_at(self, key: str) -> datetime | None:
        """When this effect was first claimed: nothing an attempt of it made at a target is older."""
        with self.session() as s:
            return s.scalar(select(EffectRow.created_at).where(EffectRow.key == key))

    def effects_done(self, keys: Iterable[str]) -> set[str]:
        """The keys already settled (done, unknown or failed): nothing to do for them in a normal run."""
        return {k for k, status in self.effect_states(keys).items() if status in self.SETTLED}

    @staticmethod
    def new_token() -> str:
        return f"claim:{uuid.uuid4().hex[:16]}"

    def claim_effects(
        self, items: Sequence[EffectItem], *, take_over: bool = True, account: str | None = None
    ) -> tuple[set[str], str]:
        """Claim effects before doing them: each new key is inserted `claimed` under a fresh token,
        on `account` (a key already there keeps its account).

        With `take_over`, rows of these keys left `claimed` by another token (an attempt that
        died before calling its target) are taken too. Returns the keys won and the token to
        settle them with; keys in any other state are not won.
        """
        token = self.new_token()
        now = utcnow()
        rows = {
            i.key: dict(
                key=i.key,
                payment_id=i.payment_id,
                target=i.target,
                action=i.action,
                status="claimed",
                token=token,
                result=None,
                created_at=now,
                updated_at=now,
                account=account or self.account,
            )
            for i in items
        }
        if not rows:
            return set(), token
        keys = list(rows)
        with self.session() as s:
            s.execute(
                self._insert(EffectRow.__table__).on_conflict_do_nothing(index_elements=["key"]),
                list(rows.values()),
            )
            if take_over:
                s.execute(
                    update(EffectRow)
                    .where(EffectRow.key.in_(keys), EffectRow.status == "claimed", EffectRow.token != token)
                    .values(token=token, updated_at=now)
                )
            won = _held(s, keys, token, "claimed")
        return won, token

    def mark_attempting(
        self, keys: Iterable[str], token: str, then: Callable[[], None] | None = None
    ) -> None:
        """claimed -> attempting: the call to the target is about to be made (commit, then call).

        `then` is that call's last step (SMTP's final dot): it runs right after the commit, before
        the connection goes back to its pool, so that a kill falls between the two as rarely as
        it can. A target that can be neither looked at nor deduped has only this moment to lose.
        """
        keys = list(keys)
        if keys:
            with self.engine.connect() as conn:
                conn.execute(
                    update(EffectRow)
                    .where(EffectRow.key.in_(keys), EffectRow.token == token, EffectRow.status == "claimed")
                    .values(status="attempting", updated_at=utcnow())
                )
                conn.commit()
                if then is not None:
                    then()
        elif then is not None:
            then()

    def take_over_attempting(self, keys: Iterable[str]) -> tuple[set[str], str]:
        """Take the rows of these keys that an attempt left `attempting` (its outcome unknown).

        The caller settles each by looking at the target (found: done; missing: redo), or redoes
        it where the target dedupes by our key. Returns the keys won and their new token.
        """
        keys = list(dict.fromkeys(keys))
        token = self.new_token()
        if not keys:
            return set(), token
        with self.session() as s:
            s.execute(
                update(EffectRow)
                .where(EffectRow.key.in_(keys), EffectRow.status == "attempting")
                .values(token=token, updated_at=utcnow())
            )
            won = _held(s, keys, token, "attempting")
        return won, token

    def settle_effects(
        self, outcomes: Sequence[EffectOutcome], token: str, *, account: str | None = None
    ) -> None:
        """One transaction: each claimed effect becomes done / unknown / failed (with a dead
        letter), or is released (deleted) so a later attempt may claim it again. Only rows
        still held by `token` change; `claimed=False` outcomes are inserted settled. The rows
        and dead letters it creates are `account`'s."""
        if not outcomes:
            return
        now = utcnow()
        with self.session() as s:
            for o in outcomes:
                item = o.item
                held = (EffectRow.key == item.key) & (EffectRow.token == token)
                if o.status == "release":
                    s.execute(delete(EffectRow).where(held, EffectRow.status.in_(("claimed", "attempting"))))
                    continue
                if o.claimed:
                    s.execute(
                        update(EffectRow)
                        .where(held)
                        .values(status=o.status, result=o.result[:1000], updated_at=now)
                    )
                else:
                    s.add(
                        EffectRow(
                            key=item.key,
                            payment_id=item.payment_id,
                            target=item.target,
                            action=item.action,
                            status=o.status,
                            token=token,
                            result=o.result[:1000],
                            created_at=now,
                            updated_at=now,
                            account=account or self.account,
                        )
                    )
                if o.status == "failed":
                    s.add(
                        DeadLetterRow(
                            payment_id=item.payment_id,
                            effect_key=item.key,
                            target=item.target,
                            action=item.action,
                            reason=f"{item.key}: {o.result}",
                            created_at=now,
                            account=account or self.account,
                        )
                    )

    def unfinished_payments(self, payment_ids: Iterable[str]) -> set[str]:
        """The payments with an effect failed, or claimed/attempting and never settled."""
        ids = sorted(set(payment_ids))
        found: set[str] = set()
        with self.session() as s:
            for start in range(0, len(ids), 500):
                found.update(
                    s.scalars(
                        select(EffectRow.payment_id)
                        .where(
                            EffectRow.payment_id.in_(ids[start : start + 500]),
                            EffectRow.status.in_(("failed", "claimed", "attempting")),
                        )
                        .distinct()
                    )
                )
        return found

    def release_superseded(self, payment_ids: Iterable[str], before: datetime) -> int:
        """Settle what dead runs left of these payments' effects, claimed or attempting before
        `before` (when the caller took the payments' leases) and not taken over since: effects
        of a state the payment has moved past, which no run will plan again. A `claimed` one never
        reached its target and is released; an `attempting` one may have, and becomes `unknown`.
        Otherwise the payment would count as unfinished for good. How many rows changed."""
        ids = sorted(set(payment_ids))
        changed = 0
        with self.session() as s:
            for start in range(0, len(ids), 500):
                old = EffectRow.payment_id.in_(ids[start : start + 500]) & (EffectRow.updated_at < before)
                gone = s.execute(delete(EffectRow).where(old, EffectRow.status == "claimed"))
                doubtful = s.execute(
                    update(EffectRow)
                    .where(old, EffectRow.status == "attempting")
                    .values(
                        status="unknown",
                        result="an attempt died in its call; the payment moved on before it was looked at",
                        updated_at=utcnow(),
                    )
                )
                changed += int(gone.rowcount or 0) + int(doubtful.rowcount or 0)  # type: ignore[attr-defined]
        return changed

    def reopen_failed_effects(self, payment_ids: Iterable[str]) -> int:
        """Forget effects that failed for good, so a replay (after a fix) may try them again."""
        ids = list(payment_ids)
        if not ids:
            return 0
        with self.session() as s:
            result = s.execute(
                delete(EffectRow).where(EffectRow.payment_id.in_(ids), EffectRow.status == "failed")
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def resolve_done_dead_letters(self) -> int:
        """Resolve the open dead letters whose effect is now done (a replay finished it)."""
        with self.session() as s:
            done = select(EffectRow.key).where(EffectRow.status == "done")
            result = s.execute(
                update(DeadLetterRow)
                .where(DeadLetterRow.resolved_at.is_(None), DeadLetterRow.effect_key.in_(done))
                .values(resolved_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def effects_for(self, payment_id: str) -> list[EffectRow]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(EffectRow).where(EffectRow.payment_id == payment_id).order_by(EffectRow.created_at)
                )
            )


def _held(s: Session, keys: Sequence[str], token: str, status: str) -> set[str]:
    """The keys among `keys` that `token` holds in `status` (what a claim or take-over won)."""
    query = select(EffectRow.key).where(
        EffectRow.key.in_(keys), EffectRow.token == token, EffectRow.status == status
    )
    return set(s.scalars(query))
