"""Signed but hostile events through the real bridge: each gets a specific 4xx naming its cause,
nothing is stored, nothing hangs, and the next good event is accepted."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from stripeflow.core.ledger import Ledger
from stripeflow.testing.stripe_events import StripeWorld
from tests.bridge.conftest import Bridge, good_event, stored

Event = dict[str, Any]


def setter(path: str, value: Any) -> Callable[[Event], Any]:
    """Set (or, with value MISSING, delete) a dotted path of the event."""

    def mutate(event: Event) -> Event:
        *parents, last = path.split(".")
        node = event
        for key in parents:
            node = node[key]
        if value is MISSING:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
        return event

    return mutate


MISSING = object()

# (case, mutation, field the 400's message names); each case's event is otherwise what Stripe sends.
MALFORMED: list[tuple[str, Callable[[Event], Any], str]] = [
    ("created 2^63", setter("created", 2**63), "created"),
    ("created 2^63 - 1", setter("created", 2**63 - 1), "created"),
    ("created -2^63 - 1", setter("created", -(2**63) - 1), "created"),
    ("created negative", setter("created", -1), "created"),
    ("created zero", setter("created", 0), "created"),
    ("created in 2100", setter("created", 4_102_444_800), "created"),
    ("created 4000 digits", setter("created", 10**3999), "created"),
    ("created float", setter("created", 1.7e9), "created"),
    ("created bool", setter("created", True), "created"),
    ("created string", setter("created", "1764547200"), "created"),
    ("created null", setter("created", None), "created"),
    ("created missing", setter("created", MISSING), "created"),
    ("id int", setter("id", 5), "id"),
    ("id dict", setter("id", {"id": "evt_1"}), "id"),
    ("id missing", setter("id", MISSING), "id"),
    ("id without evt_", setter("id", "ch_123"), "id"),
    ("id just the prefix", setter("id", "evt_"), "id"),
    ("id 256 characters", setter("id", "evt_" + "a" * 252), "id"),
    ("id with NUL", setter("id", "evt_1\u0000"), "id"),
    ("id lone surrogate", setter("id", "evt_1\ud800"), "id"),
    ("id line separator", setter("id", "evt_1\u2028"), "id"),
    ("id paragraph separator", setter("id", "evt_1\u2029"), "id"),
    ("id with a space", setter("id", "evt_1 2"), "id"),
    ("type int", setter("type", 7), "type"),
    ("type empty", setter("type", ""), "type"),
    ("type 101 characters", setter("type", "a" * 101), "type"),
    ("type with NUL", setter("type", "charge.succeeded\u0000"), "type"),
    ("type line separator", setter("type", "charge.\u2028succeeded"), "type"),
    ("type list", setter("type", ["charge.succeeded"]), "type"),
    ("livemode string", setter("livemode", "yes"), "livemode"),
    ("livemode int", setter("livemode", 1), "livemode"),
    ("livemode null", setter("livemode", None), "livemode"),
    ("data missing", setter("data", MISSING), "data.object"),
    ("data a list", setter("data", [1]), "data.object"),
    ("data.object missing", setter("data.object", MISSING), "data.object"),
    ("data.object a string", setter("data.object", "ch_1"), "data.object"),
    ("data.object a list", setter("data.object", [{"id": "ch_1"}]), "data.object"),
    ("object id int", setter("data.object.id", 5), "data.object.id"),
    ("object id dict", setter("data.object.id", {"id": "ch_1"}), "data.object.id"),
    ("object id bool", setter("data.object.id", False), "data.object.id"),
    ("object id empty", setter("data.object.id", ""), "data.object.id"),
    ("object id 256 characters", setter("data.object.id", "ch_" + "x" * 253), "data.object.id"),
    ("object id with NUL", setter("data.object.id", "ch_\u0000"), "data.object.id"),
    ("object id lone surrogate", setter("data.object.id", "ch_\udfff"), "data.object.id"),
    ("object id line separator", setter("data.object.id", "ch_\u2028"), "data.object.id"),
]


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# Bodies that are not even a Stripe-shaped JSON object (signed all the same).
RAW: list[tuple[str, str, str, str]] = [
    ("nested 100,000 deep", deep(100_000), "invalid_json", "nested too deeply"),
    ("unclosed arrays 500,000 deep", "[" * 500_000, "invalid_json", "nested too deeply"),
    (
        "an integer of 5,000 digits",
        '{"id": "evt_1", "created": ' + "7" * 5000 + "}",
        "invalid_json",
        "digits",
    ),
    ("broken JSON", '{"id": "evt_1",', "invalid_json", "not valid JSON"),
    ("a raw NUL", '{"id": "evt_1\x00"}', "invalid_json", "not valid JSON"),
    ("a list", "[1, 2]", "malformed_event", "not a JSON object"),
    ("a number", "5", "malformed_event", "not a JSON object"),
    ("null", "null", "malformed_event", "not a JSON object"),
    ("NaN", "NaN", "malformed_event", "not a JSON object"),
    ("an empty body", "", "invalid_json", "not valid JSON"),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [(m, f) for _, m, f in MALFORMED], ids=[c for c, _, _ in MALFORMED]
)
def test_a_field_the_inbox_cannot_store_is_a_400_naming_it(
    sqlite_bridge: Bridge, world: StripeWorld, mutate: Callable[[Event], Any], field: str
) -> None:
    before = stored(sqlite_bridge.ledger)
    response = sqlite_bridge.post_event(mutate(good_event(world)))
    assert stored(sqlite_bridge.ledger) == before
    after = sqlite_bridge.post_event(good_event(world))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_event"
    assert error["message"].startswith(f"Not a Stripe event: {field} ")
    assert after.status_code == 200  # and the bridge goes on
    assert stored(sqlite_bridge.ledger) == before + 1


@pytest.mark.parametrize(
    ("body", "code", "says"), [(b, c, s) for _, b, c, s in RAW], ids=[n for n, *_ in RAW]
)
def test_hostile_bodies_are_a_clean_400(
    sqlite_bridge: Bridge, world: StripeWorld, body: str, code: str, says: str
) -> None:
    before = stored(sqlite_bridge.ledger)
    response = sqlite_bridge.post(body)
    after = sqlite_bridge.post_event(good_event(world))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert says in response.json()["error"]["message"]
    assert after.status_code == 200
    assert stored(sqlite_bridge.ledger) == before + 1


# Accepted and stored whole: Stripe may send any of these (metadata and descriptions are the
# merchant's text), and the raw body holds NUL and lone surrogates only as JSON escapes.
STORABLE: list[tuple[str, Callable[[Event], Any], bool]] = [
    ("NUL in the description", setter("data.object.description", "Subskrypcja\u0000Pro"), True),
    ("a lone surrogate in metadata", setter("data.object.metadata", {"note": "x\ud800y"}), True),
    ("line separators, escaped", setter("data.object.description", "a\u2028b\u2029c"), True),
    ("line separators, raw UTF-8", setter("data.object.description", "a\u2028b\u2029c"), False),
    ("an integer of 4,000 digits in metadata", setter("data.object.amount", 10**3999), True),
    ("extra fields", setter("x_unknown", {"nested": [1, 2, {"deep": None}]}), True),
    ("an object without id", setter("data.object.id", MISSING), True),
    ("an object id of 255 characters", setter("data.object.id", "ch_" + "x" * 252), True),
    ("an event id of 255 characters", setter("id", "evt_" + "a" * 251), True),
    ("livemode missing", setter("livemode", MISSING), True),
    ("nested 200 deep", setter("data.object.metadata", json.loads(deep(200))), True),
]


@pytest.mark.parametrize(
    ("mutate", "ensure_ascii"), [(m, a) for _, m, a in STORABLE], ids=[c for c, _, _ in STORABLE]
)
def test_odd_but_storable_events_are_kept_whole(
    shared_bridge: Bridge, world: StripeWorld, mutate: Callable[[Event], Any], ensure_ascii: bool
) -> None:
    event = mutate(good_event(world))
    body = json.dumps(event, ensure_ascii=ensure_ascii)
    response = shared_bridge.post(body)
    assert response.status_code == 200, response.text
    assert response.json()["duplicate"] is False
    assert shared_bridge.ledger.load_events([event["id"]]) == [json.loads(body)]


def test_every_hostile_event_in_one_bridge_on_postgresql(
    bridge_on: Any, pg_url: str, world: StripeWorld
) -> None:
    """The same cases against PostgreSQL, where NUL, lengths and bigint range are enforced, in one
    bridge: no 5xx, no hang, nothing stored, and the good event after them all is accepted."""
    ledger = Ledger(pg_url)
    ledger.migrate()
    try:
        with bridge_on(ledger, timeout=5) as bridge:
            answers = [bridge.post_event(mutate(good_event(world))) for _, mutate, _ in MALFORMED]
            answers += [bridge.post(body) for _, body, _, _ in RAW]
            after = bridge.post_event(good_event(world))
            alive = bridge.writer.alive
        assert [a.status_code for a in answers] == [400] * len(answers)
        assert after.status_code == 200 and alive
        assert ledger.inbox_counts() == {"pending": 1}
    finally:
        ledger.dispose()


@pytest.mark.parametrize(
    "header",
    [
        "t=1" + "0" * 5000 + ",v1=" + "0" * 64,  # a timestamp of 5,001 digits
        "t=\u0661\u0662\u0663,v1=" + "0" * 64,  # Arabic-Indic digits, which int() accepts
        "t=1e9,v1=abc",
        "=,=,=",
        "t=1700000000,v1=" + "\u2028" * 64,
    ],
    ids=["huge timestamp", "non-ASCII digits", "float timestamp", "empty pairs", "separators"],
)
def test_hostile_signature_headers_are_bad_signatures(
    sqlite_bridge: Bridge, world: StripeWorld, header: str
) -> None:
    before = stored(sqlite_bridge.ledger)
    response = sqlite_bridge.post(json.dumps(good_event(world)), signature=header)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_signature"
    assert stored(sqlite_bridge.ledger) == before
