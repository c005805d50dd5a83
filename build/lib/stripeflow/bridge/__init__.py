"""The webhook bridge: verify, store durably, answer; and the dispatcher that hands events to Prefect."""
