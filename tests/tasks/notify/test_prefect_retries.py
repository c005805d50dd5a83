"""On a real Prefect server: an outage is retried by the task's declared retries, and sent once."""

from __future__ import annotations

from prefect import flow

from stripeflow.core.ledger import Ledger
from stripeflow.tasks.notify import NotifyReport, notify_changes
from tests.tasks.notify.conftest import MakeChannels, SettingsFactory, change, make_payment
from tests.tasks.notify.test_slack import Fake


def test_outage_is_retried_by_prefect_then_sent_once(
    prefect_server: str,
    slack: Fake,
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
) -> None:
    state, url = slack
    settings = make_settings(
        slack_api_base=f"{url}/api", customer_messages=[], routes={"payment": ["slack:#payments"]}
    )
    channels = make_channels(settings)
    state.fail_next(6, status=429, retry_after=1)  # outlasts the seam's 6 attempts: the task must retry

    @flow
    def run() -> NotifyReport:
        return notify_changes.with_options(retry_delay_seconds=0)(
            [change(make_payment())], settings, ledger, channels
        )

    report = run()
    assert report.sent == ["slack:#payments:team_payment:pi_3Q0001"]
    assert len(state.messages) == 1 and len(state.requests) == 7  # 6 refused, then 1 on the retry
    assert not ledger.dead_letters()
