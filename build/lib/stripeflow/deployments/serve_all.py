"""The worker process: serves every deployment and runs the dispatcher beside them.

    PREFECT_API_URL=http://127.0.0.1:4200/api stripeflow worker

`serve` makes the deployments visible in the UI (run, rerun, schedules) and runs what the UI
starts; the dispatcher thread feeds inbox events to `process-payment-events` in-process.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from prefect import serve

from stripeflow.deployments.dispatcher import Dispatcher
from stripeflow.flows.process_payment_events import process_payment_events
from stripeflow.flows.replay import replay
from stripeflow.runtime import build_runtime, set_runtime

log = logging.getLogger("stripeflow.worker")


def deployments() -> list[Any]:
    return [
        process_payment_events.to_deployment(
            name="process-payment-events",
            description="Inbox events to payments, CRM deals and notes. The dispatcher starts these runs; "
            "run it by hand with no parameters to drain whatever waits in the inbox.",
            tags=["stripeflow"],
        ),
        replay.to_deployment(
            name="replay",
            description="Process again the events set aside (dead letters), or the event ids you give.",
            tags=["stripeflow"],
        ),
    ]


def main(with_dispatcher: bool = True) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    runtime = build_runtime()
    set_runtime(runtime)
    deps = deployments()
    for deployment in deps:
        deployment.apply()  # registered before the dispatcher's first run, so runs belong to it
    dispatcher = Dispatcher(runtime)
    if with_dispatcher:
        dispatcher.start()

    def interrupt(signum: int, frame: object) -> None:
        dispatcher.stop_event.set()  # no new run starts while `serve` winds down
        raise KeyboardInterrupt

    # Ctrl-C and `kill` alike: the dispatcher stops first, then `serve` pauses the schedules
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        serve(*deps, limit=4, print_starting_message=True)
    finally:
        dispatcher.stop()


if __name__ == "__main__":
    main()
