"""What the vendor adapters share (`tasks/crm/common.py`): names, de-duplication, field mapping, memory."""

from __future__ import annotations

from decimal import Decimal

from stripeflow.tasks.crm.common import Remembered, mapped_fields, plain, split_name, unique_by
from tests.tasks.crm.harness import deal


def test_split_name() -> None:
    assert split_name("Jan Maria Kowalski", None) == ("Jan Maria", "Kowalski")
    assert split_name("Cher", None) == ("", "Cher")
    assert split_name(None, "anna@firma.pl") == ("", "anna")
    assert split_name(None, None) == ("", "Stripe customer")


def test_unique_by_keeps_the_last_and_maps_positions() -> None:
    chosen, positions = unique_by(["a1", "b1", "a2"], key=lambda s: s[0])
    assert chosen == ["a2", "b1"] and positions == [0, 1, 0]


def test_mapped_fields_from_the_payment_then_the_deal_fields() -> None:
    d = deal(1)
    d = type(d)(**{**d.__dict__, "fields": {"custom": "x"}})
    assert mapped_fields(d, {"amount": "stripe_amount", "products": "product_list", "status": "s"}) == {
        "stripe_amount": "249.00",
        "product_list": "Subskrypcja Pro",
        "s": "succeeded",
        "custom": "x",
    }
    assert plain(Decimal("1.50")) == "1.50"


def test_remembered_is_bounded() -> None:
    memory: Remembered[str] = Remembered(size=2)
    for key in "abc":
        memory.put(key, key.upper())
    assert memory.pop("a") is None and memory.pop("c") == "C" and memory.pop("c") is None
