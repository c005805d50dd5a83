"""When a Prefect task retries: only for errors worth another try, never for permanent ones."""

from __future__ import annotations

from typing import Any

from stripeflow.core.errors import RetriableError


def retry_if_retriable(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` for tasks: retry RetriableError (429, 5xx, outages), nothing else."""
    try:
        state.result()
    except RetriableError:
        return True
    except BaseException:
        return False
    return False
