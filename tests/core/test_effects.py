"""The effects lifecycle in the ledger: claimed -> attempting -> done | unknown | failed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from stripeflow.core.ledger import Ledger


@dataclass(frozen=True)
class Item:
    key: str
    payment_id: str = "pi_1"
    target: str = "email"
    action: str = "customer_payment_confirmation"


@dataclass(frozen=True)
class Outcome:
    item: Item
    status: str
    result: str
    claimed: bool = True


def test_a_claim_is_won_once_and_settles_with_its_token(any_ledger: Ledger) -> None:
    won, token = any_ledger.claim_effects([Item("a"), Item("b")])
    assert won == {"a", "b"}
    assert any_ledger.effect_states(["a", "b", "c"]) == {"a": "claimed", "b": "claimed"}
    assert any_ledger.effects_done(["a", "b"]) == set()  # claimed is not settled
    any_ledger.settle_effects([Outcome(Item("a"), "done", "<msg@id>")], "claim:someone-else")
    assert any_ledger.effect_states(["a"]) == {"a": "claimed"}  # another token changes nothing
    any_ledger.settle_effects(
        [Outcome(Item("a"), "done", "<msg@id>"), Outcome(Item("b"), "unknown", "timeout")], token
    )
    assert any_ledger.effects_done(["a", "b"]) == {"a", "b"}
    assert any_ledger.claim_effects([Item("a"), Item("b")])[0] == set()  # settled keys are never won


def test_a_dead_attempts_claim_is_taken_over_but_a_live_one_can_be_kept(any_ledger: Ledger) -> None:
    _, dead = any_ledger.claim_effects([Item("a")])
    assert any_ledger.claim_effects([Item("a")], take_over=False)[0] == set()
    won, token = any_ledger.claim_effects([Item("a")])
    assert won == {"a"} and token != dead
    any_ledger.settle_effects([Outcome(Item("a"), "done", "ok")], dead)  # the old attempt is powerless
    assert any_ledger.effect_states(["a"]) == {"a": "claimed"}
    any_ledger.settle_effects([Outcome(Item("a"), "done", "ok")], token)
    assert any_ledger.effect_states(["a"]) == {"a": "done"}


def test_an_attempt_left_unsettled_is_handed_to_whoever_looks_at_the_target(any_ledger: Ledger) -> None:
    _, token = any_ledger.claim_effects([Item("a"), Item("b")])
    any_ledger.mark_attempting(["a"], token)  # "a" was being sent when the process died
    assert any_ledger.effect_states(["a", "b"]) == {"a": "attempting", "b": "claimed"}
    assert any_ledger.claim_effects([Item("a"), Item("b")])[0] == {"b"}  # never called: redo
    won, token2 = any_ledger.take_over_attempting(["a", "b"])
    assert won == {"a"}
    any_ledger.settle_effects([Outcome(Item("a"), "done", "found at the target")], token2)
    assert any_ledger.effect_states(["a"]) == {"a": "done"}


def test_the_calls_last_step_runs_only_once_attempting_is_committed(any_ledger: Ledger) -> None:
    """SMTP's final dot goes inside `mark_attempting`, right after the commit: another
    connection already reads `attempting` when it runs, and a failing step keeps the mark."""
    _, token = any_ledger.claim_effects([Item("a"), Item("b")])
    seen: list[dict[str, str]] = []
    other = Ledger(any_ledger.url)  # its own engine: it reads only what was committed
    try:
        any_ledger.mark_attempting(["a"], token, lambda: seen.append(other.effect_states(["a"])))
        assert seen == [{"a": "attempting"}]

        def dot_lost() -> None:
            raise OSError("connection reset")

        with pytest.raises(OSError, match="connection reset"):
            any_ledger.mark_attempting(["b"], token, dot_lost)
        assert other.effect_states(["b"]) == {"b": "attempting"}  # in doubt, as the write may have gone
    finally:
        other.dispose()


def test_release_frees_a_claim_and_failed_ones_reopen_for_a_replay(any_ledger: Ledger) -> None:
    won, token = any_ledger.claim_effects([Item("a"), Item("b"), Item("c")])
    any_ledger.settle_effects(
        [
            Outcome(Item("a"), "done", "ts-1"),
            Outcome(Item("b"), "failed", "channel_not_found"),
            Outcome(Item("c"), "release", "smtp down"),
        ],
        token,
    )
    (letter,) = any_ledger.dead_letters()
    assert letter.reason == "b: channel_not_found" and letter.effect_key == "b"
    assert any_ledger.effect_states(["a", "b", "c"]) == {"a": "done", "b": "failed"}
    assert any_ledger.reopen_failed_effects(["pi_1"]) == 1
    won, token = any_ledger.claim_effects([Item("a"), Item("b"), Item("c")])
    assert won == {"b", "c"}
    assert any_ledger.resolve_done_dead_letters() == 0  # not done yet: the letter stays open
    any_ledger.settle_effects([Outcome(Item("b"), "done", "sent on replay")], token)
    assert any_ledger.resolve_done_dead_letters() == 1
    assert any_ledger.dead_letters() == []


def test_keyed_writes_record_their_own_proof_once(any_ledger: Ledger) -> None:
    deal = Item("deal:pi_1:abc", target="hubspot", action="deal")
    won, token = any_ledger.claim_effects([deal])  # claimed and settled at once, as `mark_synced` does
    any_ledger.settle_effects([Outcome(deal, "done", "111")], token)
    assert won == {deal.key}
    won, token = any_ledger.claim_effects([deal])  # written again: already recorded, nothing to settle
    assert won == set()
    (row,) = any_ledger.effects_for("pi_1")
    assert (row.status, row.result) == ("done", "111")
