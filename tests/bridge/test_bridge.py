"""The real bridge under uvicorn on 127.0.0.1: every answer by its cause, nothing stored on a 4xx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from stripeflow.bridge.app import create_app
from stripeflow.core.config import Settings
from stripeflow.core.ledger import Ledger
from stripeflow.testing.server import serve_app
from stripeflow.testing.stripe_events import StripeWorld, sign

SECRET = "whsec_test_primary"
OLD_SECRET = "whsec_test_rotated_out"


@pytest.fixture
def bridge(settings: Settings, ledger: Ledger) -> Iterator[httpx.Client]:
    settings = settings.model_copy(
        update={
            "stripe": settings.stripe.model_copy(
                update={"webhook_secrets": [*settings.stripe.webhook_secrets, SecretStr(OLD_SECRET)]}
            )
        }
    )
    with (
        serve_app(create_app(settings, ledger, prefect_api_url=None)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def event_body(world: StripeWorld) -> str:
    _, ch = world.payment_intent(24900, "pln", world.customer("a@b.pl"))
    return json.dumps(world.event("charge.succeeded", ch))


def post(client: httpx.Client, body: str | bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return client.post("/webhooks/stripe", content=body, headers=headers)


def test_a_signed_event_is_stored_before_the_2xx(
    bridge: httpx.Client, ledger: Ledger, world: StripeWorld
) -> None:
    body = event_body(world)
    response = post(bridge, body, sign(body, SECRET))
    assert response.status_code == 200
    assert response.json() == {"received": True, "id": json.loads(body)["id"], "duplicate": False}
    assert ledger.inbox_counts() == {"pending": 1}  # on disk when the answer came
    assert ledger.load_events([json.loads(body)["id"]]) == [json.loads(body)]


def test_a_duplicate_is_acknowledged_and_adds_nothing(
    bridge: httpx.Client, ledger: Ledger, world: StripeWorld
) -> None:
    body = event_body(world)
    answers = [post(bridge, body, sign(body, SECRET)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["duplicate"] for a in answers] == [False, True, True]
    assert ledger.inbox_counts() == {"pending": 1}


def test_a_rotated_secret_is_still_accepted(bridge: httpx.Client, ledger: Ledger, world: StripeWorld) -> None:
    body = event_body(world)
    assert post(bridge, body, sign(body, OLD_SECRET)).status_code == 200


@pytest.mark.parametrize(
    ("make_signature", "code"),
    [
        (lambda body: None, "missing_signature"),
        (lambda body: "", "missing_signature"),
        (lambda body: sign(body, "whsec_someone_else"), "bad_signature"),
        (lambda body: sign(body + " ", SECRET), "bad_signature"),
        (lambda body: "abc", "bad_signature"),
        (lambda body: sign(body, SECRET, timestamp=int(time.time()) - 301), "stale_timestamp"),
    ],
)
def test_signature_problems_are_400_by_cause(
    bridge: httpx.Client, ledger: Ledger, world: StripeWorld, make_signature: object, code: str
) -> None:
    body = event_body(world)
    response = post(bridge, body, make_signature(body))  # type: ignore[operator]
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert ledger.inbox_counts() == {}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "malformed_event"),
        (json.dumps({"id": "evt_1", "type": "charge.succeeded", "created": 1}), "malformed_event"),
        (
            json.dumps({"id": "x_1", "type": "charge.succeeded", "created": 1, "data": {"object": {}}}),
            "malformed_event",
        ),
        (json.dumps({"id": "evt_1", "created": 1, "data": {"object": {}}}), "malformed_event"),
    ],
)
def test_broken_bodies_with_a_valid_signature_are_400(
    bridge: httpx.Client, ledger: Ledger, body: str, code: str
) -> None:
    response = post(bridge, body, sign(body, SECRET))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert ledger.inbox_counts() == {}


def test_a_body_over_one_mebibyte_is_413(bridge: httpx.Client, ledger: Ledger, world: StripeWorld) -> None:
    event = json.loads(event_body(world))
    event["data"]["object"]["metadata"] = {"padding": "x" * (1024 * 1024)}
    body = json.dumps(event)
    response = post(bridge, body, sign(body, SECRET))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert ledger.inbox_counts() == {}


def test_a_ledger_that_cannot_store_answers_503_so_stripe_retries(
    settings: Settings, world: StripeWorld
) -> None:
    down = Ledger("postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    with serve_app(create_app(settings, down)) as url:
        body = event_body(world)
        response = httpx.post(
            f"{url}/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": sign(body, SECRET)},
            timeout=30,
        )
        health = httpx.get(f"{url}/healthz", timeout=30)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ledger_unavailable"
    assert response.headers["retry-after"] == "5"
    assert health.status_code == 503 and health.json()["ledger"]["ok"] is False


def test_health_reports_the_ledger_prefect_and_missing_enrichment(
    bridge: httpx.Client, world: StripeWorld
) -> None:
    body = event_body(world)
    post(bridge, body, sign(body, SECRET))
    health = bridge.get("/healthz").json()
    assert health["ok"] is True
    assert health["ledger"] == {"ok": True, "inbox": {"pending": 1}}
    assert health["prefect"]["ok"] is None  # no PREFECT_API_URL given to this bridge
    # no STRIPE_API_KEY: the bridge says what the payloads alone cannot give
    assert health["stripe"]["api_key"] is False
    assert any("customer" in gap for gap in health["stripe"]["missing"])


def test_concurrent_deliveries_are_each_stored_once(
    bridge: httpx.Client, ledger: Ledger, world: StripeWorld
) -> None:
    import concurrent.futures

    bodies = [event_body(world) for _ in range(40)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: post(bridge, b, sign(b, SECRET)).status_code, bodies + bodies))
    assert answers == [200] * 80
    assert ledger.inbox_counts() == {"pending": 40}
