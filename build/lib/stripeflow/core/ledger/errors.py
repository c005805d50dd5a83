"""How the ledger tells database errors apart and describes them without their data."""

from __future__ import annotations

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError

# the database itself is away or busy, not this payment: the run fails and is retried whole
UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError)


def describe_error(exc: BaseException) -> str:
    """`ExceptionClass: message`, one line, for a dead letter or a note. A database error is
    described by the driver's own error: SQLAlchemy's text would carry the statement's
    parameters, which hold payloads and e-mail addresses."""
    if isinstance(exc, SQLAlchemyError) and getattr(exc, "orig", None) is not None:
        exc = exc.orig  # type: ignore[attr-defined]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]
