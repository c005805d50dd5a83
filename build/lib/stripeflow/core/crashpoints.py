"""Named points where a test may kill this process for real (SIGKILL), to prove exactly-once.

Inert in production: `crash_point(name)` does nothing unless the environment variable
STRIPEFLOW_CRASH_AT equals `name`. A test starts a child process with, e.g.,
STRIPEFLOW_CRASH_AT=crm.note.after_call, and the child dies right after the CRM note call and
before its ledger settle, exactly as a power cut would leave it.

Points in use (keep this list in step with the calls):
- crm.note.after_call     a batch of CRM notes sent, not yet settled in the ledger (tasks/crm/tasks.py)
- crm.deal.after_call     the CRM's deals created or updated, not yet linked in the ledger (same)
- notify.<target>.after_claim  messages claimed, none sent (tasks/notify/delivery.py; <target>:
  email, slack, telegram, handoff)
- notify.<target>.after_call   one message sent, not yet settled in the ledger (same)
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "STRIPEFLOW_CRASH_AT"


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL when STRIPEFLOW_CRASH_AT names this point; else nothing."""
    if os.environ.get(ENV_VAR) == name:
        # SIGKILL, not an exception: no finally, no atexit, no flush, as a real crash.
        os.kill(os.getpid(), signal.SIGKILL)
