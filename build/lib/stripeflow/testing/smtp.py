"""A real SMTP server for tests (aiosmtpd) that records and parses what it receives.

    with smtp_server(users={"shop@example.com": "app-password"}) as server:
        ... send to 127.0.0.1:server.port ...
        msg = server.messages[0].message        # an email.message.EmailMessage

- AUTH LOGIN (PLAIN is withheld, so clients really speak LOGIN) over plain TCP when `users` is set;
  `auth_required` refuses mail from a session that did not log in.
- `reject`: recipient addresses answered `550 5.1.1 ... User unknown` at RCPT.
- Faults: `server.fail_data_with = "451 4.3.0 Try again later"` answers DATA so;
  `server.drop_during_data = n` closes the connection instead of answering the next n DATAs
  (the client cannot know whether the message was taken).
"""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from stripeflow.testing.server import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    login: str | None


@dataclass
class RecordingHandler:
    reject: set[str] = field(default_factory=set)
    messages: list[Received] = field(default_factory=list)
    fail_data_with: str | None = None
    drop_during_data: int = 0

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.drop_during_data > 0:
            self.drop_during_data -= 1
            server.transport.close()
            return "250 OK"  # never reaches the client: the connection is already gone
        if self.fail_data_with:
            return self.fail_data_with
        content = envelope.original_content or envelope.content or b""
        raw = content.encode() if isinstance(content, str) else bytes(content)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.messages.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), raw, message, login))  # type: ignore[arg-type]
        return "250 2.0.0 OK: queued"


class SMTPServer:
    def __init__(self, handler: RecordingHandler, controller: Controller, port: int) -> None:
        self.handler = handler
        self.controller = controller
        self.port = port
        self.host = "127.0.0.1"

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("fail_data_with", "drop_during_data", "reject"):
            setattr(self.handler, name, value)
        else:
            super().__setattr__(name, value)


@contextmanager
def smtp_server(
    users: dict[str, str] | None = None,
    *,
    auth_required: bool = False,
    reject: set[str] | None = None,
    tls: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    port: int | None = None,
) -> Iterator[SMTPServer]:
    """`tls`: the server's certificate, offered by STARTTLS (and then required before AUTH), or
    from the first byte with `implicit_tls` (port-465 style, smtplib.SMTP_SSL). `port`: a fixed
    one, e.g. to bring a server back where clients found none (an outage)."""
    handler = RecordingHandler(reject={r.lower() for r in reject or set()})

    def authenticator(
        server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and users is not None
            and users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    port = port or free_port()
    kwargs: dict[str, Any] = {}
    if users is not None:
        kwargs.update(
            authenticator=authenticator,
            auth_require_tls=tls is not None and not implicit_tls,  # aiosmtpd only sees STARTTLS as TLS
            auth_required=auth_required,
            auth_exclude_mechanism=["PLAIN"],
        )
    if tls is not None and implicit_tls:
        kwargs["ssl_context"] = tls
    elif tls is not None:
        kwargs.update(tls_context=tls, require_starttls=True)
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SMTPServer(handler, controller, port)
    finally:
        controller.stop()
