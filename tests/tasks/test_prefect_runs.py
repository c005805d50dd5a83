"""Run naming: the names runs had before naming had one home (tasks/prefect_runs.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from stripeflow.core.payment import Payment, PaymentStatus
from stripeflow.deployments import dispatcher
from stripeflow.flows import process_payment_events
from stripeflow.tasks import prefect_runs
from stripeflow.tasks.prefect_runs import events_run_name, parameters_run_name, run_name_for


def test_a_dispatched_run_is_named_after_its_events() -> None:
    assert events_run_name(["evt_1"]) == "evt_1"
    assert events_run_name(["evt_1", "evt_2", "evt_3"]) == "evt_1 +2"


@pytest.mark.parametrize(
    ("event_ids", "name"),
    [(None, "0 events"), ([], "0 events"), (["evt_1"], "evt_1"), (["a", "b"], "2 events")],
)
def test_a_run_created_without_a_name_is_named_from_its_parameters(
    monkeypatch: pytest.MonkeyPatch, event_ids: list[str] | None, name: str
) -> None:
    monkeypatch.setattr(prefect_runs, "flow_run", SimpleNamespace(parameters={"event_ids": event_ids}))
    assert parameters_run_name() == name


def test_a_run_is_renamed_after_its_payments() -> None:
    def paid(payment_id: str) -> Payment:
        return Payment(
            payment_id=payment_id,
            amount=Decimal("249"),
            currency="PLN",
            occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
            status=PaymentStatus.succeeded,
        )

    assert run_name_for([]) is None
    assert run_name_for([paid("pi_1")]) == "pi_1 · 249,00\xa0zł"
    assert run_name_for([paid("pi_1")], "en") == "pi_1 · PLN\xa0249.00"
    assert run_name_for([paid("pi_1"), paid("pi_1"), paid("pi_2")]) == "pi_1 · 249,00\xa0zł +1"


def test_the_flow_and_the_dispatcher_use_the_one_naming_module() -> None:
    assert process_payment_events.process_payment_events.flow_run_name is parameters_run_name
    assert dispatcher.events_run_name is events_run_name
