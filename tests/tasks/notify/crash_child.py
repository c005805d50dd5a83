"""A child process for the real-kill tests: runs a notify task over a ledger, nothing else.

    python -m tests.tasks.notify.crash_child spec.json

spec: {"ledger": url, "settings": {...}, "payments": [Payment JSON], "task": "customer" | "team" | "handoff"}.
With STRIPEFLOW_CRASH_AT set, `crash_point` kills it with SIGKILL at that point; otherwise it
prints the task's report counts as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stripeflow.core.config import Settings
from stripeflow.core.ledger import Ledger
from stripeflow.core.payment import Payment, PaymentChange
from stripeflow.tasks.notify import hand_off_changes, notify_changes


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    settings = Settings.model_validate(spec["settings"])
    ledger = Ledger(spec["ledger"])
    changes = [PaymentChange(payment=Payment.model_validate(p), previous=None) for p in spec["payments"]]
    if spec["task"] == "handoff":
        report = hand_off_changes.fn(changes, settings, ledger)
    else:
        audience = "team" if spec["task"] == "team" else "customer"
        report = notify_changes.fn(changes, settings, ledger, audience=audience)
    print(json.dumps({"counts": report.counts(), "unknown": report.unknown}))
    ledger.dispose()


if __name__ == "__main__":
    main(sys.argv[1])
