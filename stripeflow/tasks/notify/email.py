"""E-mail: MIME built with the standard library, sent over SMTP or written to a local outbox.

SMTP speaks no HTTP, so it cannot use `VendorAPI`; it reports into the same error tree instead,
and it never retries by itself (the notify task's declared retries do, guarded by the ledger):

    refused before DATA (connection, 4xx)      RetriableError   nothing was delivered
    5xx for the sender, a recipient or DATA    PermanentError   e.g. 550 no such user: dead letter
    535 / other AUTH failures                  AuthError
    connection lost after DATA's final dot     OutcomeUnknownError  the server may have taken it

`SMTPMailer.send(msg, attempt)` calls `attempt(final_dot)` as late as the protocol allows:
after the server accepted the sender, every recipient and DATA (354) and took the whole message.
The ledger commits `attempting` and writes the final dot straight after its commit. A crash
before the commit delivers nothing and is resent; a crash after it is settled `unknown` and not
resent, since SMTP cannot be asked. So the one e-mail a kill can lose is one killed in the
microseconds between that commit and the dot's write.

Header values are made safe here (`header_text`): line and paragraph separators (U+2028,
U+2029, U+0085, CR, LF), NUL and other control characters become spaces, and long values are
cut, so any product or customer name makes a valid one-line header.

`EmailChannel` is the `email:<address>` route and the customer e-mails: the outbox can be looked
at and dedupes (one file per Message-ID, replaced atomically); SMTP can do neither.
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import os
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeVar

from stripeflow.core.config import Settings, SMTPSettings
from stripeflow.core.errors import (
    AuthError,
    ConfigError,
    OutcomeUnknownError,
    PermanentError,
    RetriableError,
    VendorError,
)
from stripeflow.tasks.notify.base import Message, Secret, build
from stripeflow.tasks.notify.delivery import CANNOT_LOOK, Attempt, Looked
from stripeflow.tasks.notify.render import EmailContent, one_line

if TYPE_CHECKING:
    from stripeflow.tasks.notify.channels import Channels

VENDOR = "smtp"
FRESH_SESSION = 5.0  # seconds after an answer in which a session is used without a NOOP first
SUBJECT_MAX = 200  # characters: mail clients show far fewer, and a subject need not carry a whole name
NAME_MAX = 100
SMTP_PASSWORD = Secret("smtp_password", lambda cfg: cfg.smtp.password, "smtp_password")


def header_text(value: str, limit: int) -> str:
    """One line, no control characters, at most `limit` characters (an ellipsis says it was cut)."""
    text = one_line(value)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class Envelope:
    """Who a message is from and to, and the headers that are not content."""

    sender: str
    to: str
    to_name: str | None = None
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    unsubscribe_url: str | None = None


def sender_domain(sender: str) -> str:
    _, addr = email.utils.parseaddr(sender)
    return addr.rpartition("@")[2] or "localhost"


def message_id(key: str, payment_id: str, sender: str) -> str:
    """The same (payment, kind) always gets the same Message-ID, so a duplicate is recognisable.

    `<pi_....<digest of the effect key>@domain>`: short enough not to be folded (a folded
    Message-ID comes back from some parsers with a leading space).
    """
    local = re.sub(r"[^A-Za-z0-9_-]", "-", payment_id)[:60]
    return f"<{local}.{hashlib.sha256(key.encode()).hexdigest()[:16]}@{sender_domain(sender)}>"


def build_email(
    content: EmailContent, envelope: Envelope, *, msg_id: str, now: datetime | None = None
) -> EmailMessage:
    """multipart/alternative (text, then HTML), UTF-8, quoted-printable so any relay takes it.

    Raises PermanentError for an address that cannot be put in a header (it would never send).
    """
    msg = EmailMessage(policy=email.policy.SMTP)
    try:
        msg["From"] = envelope.sender
        name = header_text(envelope.to_name or "", NAME_MAX)
        msg["To"] = Address(display_name=name, addr_spec=envelope.to)
        if envelope.reply_to:
            msg["Reply-To"] = envelope.reply_to
    except (ValueError, IndexError, TypeError) as exc:
        raise PermanentError(f"invalid address: {exc}", vendor=VENDOR, code="invalid_address") from exc
    msg["Subject"] = header_text(content.subject, SUBJECT_MAX)
    msg["Date"] = email.utils.format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = msg_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders stay quiet
    unsubscribe = [f"<mailto:{envelope.unsubscribe_mailto}>"] if envelope.unsubscribe_mailto else []
    if envelope.unsubscribe_url:
        unsubscribe.append(f"<{envelope.unsubscribe_url}>")
    if unsubscribe:
        msg["List-Unsubscribe"] = ", ".join(unsubscribe)
    msg.set_content(content.text, cte="quoted-printable")
    msg.add_alternative(content.html, subtype="html", cte="quoted-printable")
    return msg


class Mailer(Protocol):
    """Delivers one built message; returns a short receipt for the ledger."""

    def send(self, msg: EmailMessage, attempt: Attempt) -> str: ...

    def look(self, msg_id: str) -> bool | None:
        """Whether this message is at the target (None: this mailer cannot tell)."""
        ...

    def close(self) -> None: ...


class OutboxMailer:
    """Embedded mode: each message becomes `<outbox>/<Message-ID>.eml` (rewriting it is harmless)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, msg_id: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9._@-]", "_", msg_id.strip().strip("<>")) + ".eml")

    def look(self, msg_id: str) -> bool | None:
        return self.path(msg_id).exists()

    def send(self, msg: EmailMessage, attempt: Attempt) -> str:
        path = self.path(str(msg["Message-ID"]))
        tmp = path.with_suffix(".eml.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(msg.as_bytes())
            attempt()
            os.replace(tmp, path)  # atomic: a reader never sees half a message, `look` never a false one
        except OSError as exc:  # a full or read-only disk: nothing was written, try again later
            raise RetriableError(f"cannot write to the outbox: {exc}", vendor="outbox") from exc
        return str(path)

    def close(self) -> None:
        pass


SMTPFactory = Callable[[SMTPSettings], smtplib.SMTP]
SMTPSession = TypeVar("SMTPSession", bound=smtplib.SMTP)


def connect_smtp(cfg: SMTPSettings) -> smtplib.SMTP:
    """A connected (SSL or STARTTLS) SMTP session; login is separate so its errors are distinct."""
    if not cfg.host:
        raise ConfigError("notify.smtp.host (SMTP_HOST) is not set")
    context = ssl.create_default_context()
    if cfg.security == "ssl":
        return _no_delay(smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout, context=context))
    smtp = _no_delay(smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout))
    smtp.ehlo()
    if cfg.security == "starttls":
        smtp.starttls(context=context)
        smtp.ehlo()
    return smtp


def _no_delay(smtp: SMTPSession) -> SMTPSession:
    """TCP_NODELAY: the final dot goes alone after the `attempting` commit, and Nagle's
    algorithm would hold it for the server's delayed ACK (40 ms a message, measured)."""
    if smtp.sock is not None:
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return smtp


def _dot_stuffed(payload: bytes) -> bytes:
    """The message as DATA carries it, without the final dot (as `smtplib.SMTP.data` does it)."""
    body = re.sub(rb"(?m)^\.", b"..", payload)
    return body if body.endswith(b"\r\n") else body + b"\r\n"


def _response_error(code: int, reply: bytes | str, what: str) -> VendorError:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    message = f"{what}: {code} {text}".strip()
    if 400 <= code < 500:
        return RetriableError(message, vendor=VENDOR, status=code, code=what)
    return PermanentError(message, vendor=VENDOR, status=code, code=what)


_SESSION_SLOTS: dict[tuple[str | None, int, str | None], threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def session_slots(cfg: SMTPSettings) -> threading.BoundedSemaphore:
    """The process's places for open sessions to this server and account (`max_sessions`),
    shared by every run's sending threads."""
    with _SLOTS_LOCK:
        return _SESSION_SLOTS.setdefault(
            (cfg.host, cfg.port, cfg.username), threading.BoundedSemaphore(cfg.max_sessions)
        )


class SMTPMailer:
    """One SMTP session per sending thread, opened on first use (within the process's
    `max_sessions` places) and reopened if the server dropped it."""

    def __init__(
        self, cfg: SMTPSettings, password: str | None = None, connect: SMTPFactory = connect_smtp
    ) -> None:
        self.cfg = cfg
        self.password = password
        self._connect = connect
        self._smtp: smtplib.SMTP | None = None
        self._used_at = 0.0  # monotonic time of the session's last answer
        self._slots = session_slots(cfg)
        self._holding = False  # whether this mailer holds one of the places

    def _take_place(self) -> None:
        if not self._holding:
            if not self._slots.acquire(timeout=self.cfg.timeout):
                raise RetriableError(
                    f"all {self.cfg.max_sessions} SMTP sessions to {self.cfg.host} are busy", vendor=VENDOR
                )
            self._holding = True

    def _free_place(self) -> None:
        if self._holding:
            self._holding = False
            self._slots.release()

    def _session(self) -> smtplib.SMTP:
        if self._smtp is not None:
            if time.monotonic() - self._used_at < FRESH_SESSION:
                return self._smtp  # it just answered: a NOOP first would double each message's round trips
            try:
                if self._smtp.noop()[0] == 250:
                    return self._smtp
            except (smtplib.SMTPException, OSError):
                pass
            self.close()
        self._take_place()
        try:
            smtp = self._connect(self.cfg)
        except smtplib.SMTPResponseException as exc:
            self._free_place()
            raise _response_error(exc.smtp_code, exc.smtp_error, "connect") from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, DNS, TLS: nothing was sent
            self._free_place()
            raise RetriableError(
                f"cannot connect to {self.cfg.host}:{self.cfg.port}: {exc}", vendor=VENDOR
            ) from exc
        if self.cfg.username:
            try:
                smtp.login(self.cfg.username, self.password or "")
            except smtplib.SMTPAuthenticationError as exc:
                smtp.close()
                self._free_place()
                raise AuthError(
                    f"login refused: {exc.smtp_code}", vendor=VENDOR, status=exc.smtp_code, code="auth"
                ) from exc
            except smtplib.SMTPNotSupportedError as exc:
                smtp.close()
                self._free_place()
                raise AuthError(
                    "the server offers no AUTH (is STARTTLS needed?)", vendor=VENDOR, code="auth"
                ) from exc
            except (smtplib.SMTPException, OSError) as exc:
                smtp.close()
                self._free_place()
                raise RetriableError(f"login failed: {exc}", vendor=VENDOR) from exc
        self._smtp = smtp
        self._used_at = time.monotonic()
        return smtp

    def look(self, msg_id: str) -> bool | None:
        return None  # SMTP has no way to ask whether a message was taken

    def send(self, msg: EmailMessage, attempt: Attempt) -> str:
        smtp = self._session()
        sender = email.utils.parseaddr(str(msg["From"]))[1]
        recipients = [a.addr_spec for a in msg["To"].addresses]
        payload = msg.as_bytes(policy=email.policy.SMTP)
        try:  # MAIL and RCPT: until DATA is answered, nothing was delivered
            try:
                code, reply = smtp.mail(sender)
            except (smtplib.SMTPServerDisconnected, ConnectionError):  # it closed an idle session
                self._drop()
                smtp = self._session()
                code, reply = smtp.mail(sender)
            if code != 250:
                raise _response_error(code, reply, "sender_refused")
            for rcpt in recipients:
                code, reply = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    raise _response_error(code, reply, "recipient_refused")
        except VendorError:
            self._reset()
            raise
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise RetriableError(f"connection lost before DATA: {exc}", vendor=VENDOR) from exc
        try:  # DATA and the message itself: still nothing delivered until the final dot
            code, reply = smtp.docmd("data")
            if code != 354:
                raise _response_error(code, reply, "data_refused")
            smtp.send(_dot_stuffed(payload))
        except VendorError:
            self._reset()
            raise
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise RetriableError(f"connection lost before the end of DATA: {exc}", vendor=VENDOR) from exc
        dot: list[bool] = []

        def final_dot() -> None:
            dot.append(True)  # before the write: a dot half written is as doubtful as a whole one
            smtp.send(b".\r\n")

        try:  # the ledger marks `attempting` and, right after its commit, the dot goes
            attempt(final_dot)
            if not dot:
                final_dot()
            code, reply = smtp.getreply()
        except (smtplib.SMTPException, OSError) as exc:  # timeouts included
            self._drop()
            if not dot:
                raise
            raise OutcomeUnknownError(f"connection lost during DATA: {exc}", vendor=VENDOR) from exc
        except BaseException:
            self._drop()  # without the final dot the server discards the message
            raise
        self._used_at = time.monotonic()
        if code != 250:  # the answer to the message itself: refused, so not delivered
            self._reset()
            raise _response_error(code, reply, "data_refused")
        return str(msg["Message-ID"])

    def _reset(self) -> None:
        if self._smtp is None:
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def _drop(self) -> None:
        """Close the socket without QUIT: inside DATA, QUIT would be read as part of the message."""
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None
        self._free_place()

    def close(self) -> None:
        if self._smtp is None:
            self._free_place()
            return
        try:
            self._smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._smtp.close()
        self._smtp = None
        self._free_place()


def make_mailer(settings: Settings, password: str | None, connect: SMTPFactory = connect_smtp) -> Mailer:
    """SMTP when a host is set, else the local outbox (`notify.outbox`, default <home>/outbox)."""
    cfg = settings.notify
    if cfg.smtp.host:
        return SMTPMailer(cfg.smtp, password, connect)
    return OutboxMailer(cfg.outbox or settings.home / "outbox")


class EmailChannel:
    """`email:<address>` routes and every customer e-mail, through one mailer per sending thread."""

    type: ClassVar[str] = "email"
    target: ClassVar[str] = "email"
    secrets: ClassVar[tuple[Secret, ...]] = (SMTP_PASSWORD,)

    def __init__(self, clients: Channels) -> None:
        self.clients = clients

    def message_id(self, message: Message) -> str:
        return message_id(message.key, message.payment.payment_id, self.clients.settings.notify.sender)

    def mime(self, message: Message) -> EmailMessage:
        cfg = self.clients.settings.notify
        customer = message.for_customer
        renderer, context = message.renderer, message.context()
        content = (
            renderer.customer_email(message.kind, context)
            if customer
            else renderer.team_email(message.kind, context)
        )
        envelope = Envelope(
            sender=cfg.sender,
            to=message.to,
            to_name=message.payment.name if customer else None,
            reply_to=cfg.reply_to if customer else None,
            unsubscribe_mailto=cfg.unsubscribe_mailto if customer else None,
            unsubscribe_url=cfg.unsubscribe_url if customer else None,
        )
        msg = build_email(content, envelope, msg_id=self.message_id(message))
        msg.as_bytes()  # serialising is where a bad header value shows itself: here, not mid-send
        return msg

    def send(self, message: Message, attempt: Attempt) -> str:
        msg = build(lambda: self.mime(message))
        return self.clients.mailer().send(msg, attempt)

    @property
    def can_look(self) -> bool:
        return not self.clients.settings.notify.smtp.host  # the outbox can; SMTP keeps nothing to ask

    def look(self, message: Message) -> Looked:
        msg_id = self.message_id(message)
        found = self.clients.mailer().look(msg_id)
        return CANNOT_LOOK if found is None else Looked(found, msg_id)

    @property
    def dedupes(self) -> bool:
        return self.can_look  # the outbox: one file per Message-ID, replaced atomically

    def breaker(self, message: Message) -> str:
        return "email"  # one SMTP server for all mail
