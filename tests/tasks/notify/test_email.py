"""E-mail against a real SMTP server (aiosmtpd): MIME, AUTH LOGIN, rejections, lost connections."""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import trustme

from stripeflow.core.config import CompanySettings, Settings
from stripeflow.core.ledger import Ledger
from stripeflow.tasks.notify import notify_changes
from stripeflow.tasks.notify.channels import Channels
from stripeflow.tasks.notify.delivery import Attempt, deliver
from stripeflow.tasks.notify.email import message_id
from stripeflow.testing.smtp import SMTPServer, smtp_server
from tests.tasks.notify.conftest import MakeChannels, SettingsFactory, change, make_payment

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

USER, PASSWORD = "sklep@example.pl", "gmail-app-password"


def with_password(make_channels: MakeChannels) -> Callable[[Settings], Channels]:
    return lambda settings: make_channels(settings, smtp_password=PASSWORD)


def no_ledger(then: Callable[[], None] | None = None) -> None:
    """An attempt with no ledger behind it: the call's last step goes at once."""
    if then is not None:
        then()


def counting(seen: list[int], server: SMTPServer) -> Attempt:
    """An attempt that notes how many messages the server held when it was made."""

    def attempt(then: Callable[[], None] | None = None) -> None:
        seen.append(len(server.messages))
        no_ledger(then)

    return attempt


def smtp_settings(make_settings: SettingsFactory, port: int, **notify: object) -> Settings:
    defaults: dict[str, object] = dict(
        smtp={"host": "127.0.0.1", "port": port, "security": "none", "username": USER, "timeout": 5},
        sender="Sklep Żółw <sklep@example.pl>",
        reply_to="pomoc@example.pl",
        unsubscribe_mailto="wypisz@example.pl",
        unsubscribe_url="https://example.pl/wypisz",
        routes={"payment": ["email:zespol@example.pl"]},
    )
    return make_settings(**{**defaults, **notify})


def test_customer_mail_is_correct_mime(
    make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    with smtp_server(users={USER: PASSWORD}, auth_required=True) as server:
        mk = with_password(make_channels)
        settings = smtp_settings(make_settings, server.port)
        channels = mk(settings)
        report = notify_changes.fn([change(make_payment(name="Zofia Łęcka"))], settings, ledger, channels)
        assert len(report.sent) == 2 and not report.dead

        by_to = {m.rcpt_tos[0]: m for m in server.messages}
        customer = by_to["anna@example.pl"]
        assert customer.login == USER  # AUTH LOGIN went through
        msg = customer.message
        assert msg["Subject"] == "Potwierdzenie płatności – Pakiet Automatyzacji CRM"
        assert b"=?utf-8?" in customer.raw.split(b"\r\n\r\n")[0]  # RFC 2047 on the wire
        assert str(msg["To"]) == "Zofia Łęcka <anna@example.pl>"
        assert msg["Reply-To"] == "pomoc@example.pl"
        assert msg["List-Unsubscribe"] == "<mailto:wypisz@example.pl>, <https://example.pl/wypisz>"
        key = "email:customer:payment_confirmation:pi_3Q0001"
        assert msg["Message-ID"] == message_id(key, "pi_3Q0001", "sklep@example.pl")
        assert msg["Message-ID"].startswith("<pi_3Q0001.") and msg["Message-ID"].endswith("@example.pl>")
        assert msg["Auto-Submitted"] == "auto-generated"
        assert msg.get_content_type() == "multipart/alternative"
        text, html = list(msg.iter_parts())
        assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
        assert text.get_content_charset() == "utf-8"
        assert "Otrzymaliśmy Twoją wpłatę 1\u00a0249,00\u00a0zł" in text.get_content()
        assert "Dzień dobry Zofia Łęcka" in html.get_content()
        assert all(b < 128 for b in customer.raw)  # 7-bit clean: quoted-printable bodies

        team = by_to["zespol@example.pl"].message
        assert team["Subject"].startswith("💰 Nowa płatność: 1\u00a0249,00\u00a0zł")
        assert team["List-Unsubscribe"] is None and team["Reply-To"] is None


def test_rerun_sends_nothing_twice(
    make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    with smtp_server(users={USER: PASSWORD}) as server:
        mk = with_password(make_channels)
        settings = smtp_settings(make_settings, server.port)
        first = make_payment()
        notify_changes.fn([change(first)], settings, ledger, mk(settings))
        again = notify_changes.fn([change(first)], settings, ledger, mk(settings))
        assert len(server.messages) == 2 and len(again.already_done) == 2 and not again.sent
        refund = make_payment(refunded_amount=Decimal("249.00"), status="partially_refunded")
        notify_changes.fn([change(refund, first)], settings, ledger, mk(settings))
        subjects = [m.message["Subject"] for m in server.messages]
        assert subjects[-1] == "Zwrot płatności – Pakiet Automatyzacji CRM"


def test_rejected_address_is_dead_lettered_and_the_rest_goes(
    make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    with smtp_server(users={USER: PASSWORD}, reject={"nikt@example.pl"}) as server:
        mk = with_password(make_channels)
        settings = smtp_settings(make_settings, server.port)
        bad = make_payment(payment_id="pi_bad", email="nikt@example.pl")
        good = make_payment(payment_id="pi_good")
        report = notify_changes.fn([change(bad), change(good)], settings, ledger, mk(settings))
        assert report.dead == ["email:customer:payment_confirmation:pi_bad"]
        assert len(report.sent) == 3 and len(server.messages) == 3
        (letter,) = ledger.dead_letters()
        assert letter.payment_id == "pi_bad" and letter.target == "email"
        assert "550" in letter.reason and "recipient_refused" in letter.reason
        rerun = notify_changes.fn([change(bad)], settings, ledger, mk(settings))
        assert rerun.already_done and len(ledger.dead_letters()) == 1  # not tried again


def test_wrong_password_dead_letters_after_one_try(
    make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    with smtp_server(users={USER: PASSWORD}) as server:
        settings = smtp_settings(make_settings, server.port)
        report = notify_changes.fn(
            [change(make_payment())], settings, ledger, make_channels(settings, smtp_password="wrong")
        )
        assert len(report.dead) == 2 and not server.messages
        assert all("AuthError" in d.reason for d in ledger.dead_letters())


def test_connection_lost_during_data_is_unknown_and_never_resent(
    make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    with smtp_server(users={USER: PASSWORD}) as server:
        mk = with_password(make_channels)
        settings = smtp_settings(make_settings, server.port, routes={})
        server.drop_during_data = 1
        report = notify_changes.fn([change(make_payment())], settings, ledger, mk(settings))
        assert report.unknown == ["email:customer:payment_confirmation:pi_3Q0001"]
        (effect,) = ledger.effects_for("pi_3Q0001")
        assert effect.status == "unknown" and "DATA" in (effect.result or "")
        again = notify_changes.fn([change(make_payment())], settings, ledger, mk(settings))
        assert again.already_done and not server.messages


def test_temporary_refusal_waits_for_the_task_retry(
    make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels
) -> None:
    from stripeflow.tasks.notify import build_messages
    from stripeflow.tasks.notify.render import Renderer

    with smtp_server(users={USER: PASSWORD}) as server:
        mk = with_password(make_channels)
        settings = smtp_settings(make_settings, server.port)
        server.fail_data_with = "451 4.3.0 Try again later"
        channels = mk(settings)
        items = build_messages([change(make_payment())], settings, ledger, channels, Renderer("pl"))
        report = deliver(items, ledger, final_attempt=False, logger=__import__("logging").getLogger("t"))
        assert len(report.pending) == 2 and not ledger.effects_for("pi_3Q0001")  # claims released
        server.fail_data_with = None
        report = deliver(items, ledger, final_attempt=False, logger=__import__("logging").getLogger("t"))
        assert len(report.sent) == 2 and len(server.messages) == 2


def test_without_smtp_mail_goes_to_the_outbox(
    make_settings: SettingsFactory, ledger: Ledger, make_channels: MakeChannels, tmp_path: Path
) -> None:
    settings = make_settings(sender="Sklep <sklep@example.pl>")
    report = notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    (path,) = (tmp_path / "home" / "outbox").glob("*.eml")
    assert report.sent == ["email:customer:payment_confirmation:pi_3Q0001"]
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "Potwierdzenie płatności – Pakiet Automatyzacji CRM"
    assert msg["Message-ID"] == message_id(report.sent[0], "pi_3Q0001", "sklep@example.pl")


@pytest.mark.parametrize(("signature", "expected"), [(None, "Sklep Żółw sp. z o.o."), ("Żółw.pl", "Żółw.pl")])
def test_mail_is_signed_by_the_seller_unless_notify_names_another(
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
    tmp_path: Path,
    signature: str | None,
    expected: str,
) -> None:
    settings = make_settings(company=signature).model_copy(
        update={"company": CompanySettings(name="Sklep Żółw sp. z o.o.", nip="5260001246")}
    )
    notify_changes.fn([change(make_payment())], settings, ledger, make_channels(settings))
    (path,) = (tmp_path / "home" / "outbox").glob("*.eml")
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert expected in text and (signature is None or "sp. z o.o." not in text)


@pytest.fixture
def tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ssl.SSLContext:
    """A certificate for 127.0.0.1 from a throw-away CA that this test's clients trust."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # ssl.create_default_context() reads it
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    return server


@pytest.mark.parametrize(("security", "implicit"), [("starttls", False), ("ssl", True)])
def test_mail_goes_over_tls_with_login(
    make_settings: SettingsFactory,
    ledger: Ledger,
    make_channels: MakeChannels,
    tls: ssl.SSLContext,
    security: str,
    implicit: bool,
) -> None:
    """STARTTLS (port 587) or TLS from the start (port 465), then AUTH LOGIN: how Gmail is reached."""
    with smtp_server(users={USER: PASSWORD}, auth_required=True, tls=tls, implicit_tls=implicit) as server:
        settings = smtp_settings(make_settings, server.port)
        settings.notify.smtp.security = security  # type: ignore[assignment]
        report = notify_changes.fn(
            [change(make_payment())], settings, ledger, with_password(make_channels)(settings)
        )
        assert len(report.sent) == 2 and not report.dead
        assert {m.login for m in server.messages} == {USER}


def test_attempting_is_marked_after_the_envelope_and_just_before_the_final_dot(
    make_settings: SettingsFactory,
) -> None:
    """The doubtful window is as narrow as SMTP allows: a crash before the dot delivers nothing."""
    from stripeflow.tasks.notify.email import Envelope, SMTPMailer, build_email
    from stripeflow.tasks.notify.render import EmailContent

    def mail(n: int, to: str = "anna@example.pl") -> email.message.EmailMessage:
        content = EmailContent(subject=f"m{n}", text=".\nline starting with a dot\n", html="<p>x</p>")
        return build_email(content, Envelope("sklep@example.pl", to), msg_id=f"<m{n}@example.pl>")

    with smtp_server(reject={"nikt@example.pl"}) as server:
        settings = smtp_settings(
            make_settings, server.port, smtp={"host": "127.0.0.1", "port": server.port, "security": "none"}
        )
        mailer = SMTPMailer(settings.notify.smtp)
        seen: list[int] = []
        assert mailer.send(mail(1), counting(seen, server)) == "<m1@example.pl>"
        assert seen == [0] and len(server.messages) == 1  # marked while the server still had nothing
        assert server.messages[0].message.get_body(("plain",)).get_content().splitlines()[0] == "."  # type: ignore[union-attr]

        from stripeflow.core.errors import PermanentError

        with pytest.raises(PermanentError, match="recipient_refused"):
            mailer.send(mail(2, "nikt@example.pl"), counting(seen, server))
        assert seen == [0]  # refused at RCPT: never marked, the target was never in doubt

        def ledger_down(then: Callable[[], None] | None = None) -> None:
            raise OSError("ledger unavailable")

        with pytest.raises(OSError, match="ledger unavailable"):
            mailer.send(mail(3), ledger_down)
        assert len(server.messages) == 1  # the connection was dropped before the dot: not delivered
        mailer.send(mail(4), no_ledger)  # a new session serves the next one
        assert [m.message["Subject"] for m in server.messages] == ["m1", "m4"]
        mailer.close()


def test_sessions_to_one_server_are_capped_across_the_process(make_settings: SettingsFactory) -> None:
    """Runs at once each open their own sessions; `max_sessions` caps them together, as mail
    providers cap concurrent connections per account. A mailer that finds every place taken
    for `timeout` seconds fails retriably (the message waits for the task's retry)."""
    from stripeflow.core.errors import RetriableError
    from stripeflow.tasks.notify.email import Envelope, SMTPMailer, build_email
    from stripeflow.tasks.notify.render import EmailContent

    def mail(n: int) -> email.message.EmailMessage:
        content = EmailContent(subject=f"m{n}", text="x", html="<p>x</p>")
        return build_email(
            content, Envelope("sklep@example.pl", "anna@example.pl"), msg_id=f"<m{n}@example.pl>"
        )

    with smtp_server() as server:
        smtp = {
            "host": "127.0.0.1",
            "port": server.port,
            "security": "none",
            "timeout": 0.3,
            "max_sessions": 1,
        }
        cfg = smtp_settings(make_settings, server.port, smtp=smtp).notify.smtp
        first, second = SMTPMailer(cfg), SMTPMailer(cfg)
        first.send(mail(1), no_ledger)
        with pytest.raises(RetriableError, match=r"all 1 SMTP sessions to 127\.0\.0\.1 are busy"):
            second.send(mail(2), no_ledger)
        first.close()  # its session ends: the place is free
        second.send(mail(3), no_ledger)
        second.close()
        assert [m.message["Subject"] for m in server.messages] == ["m1", "m3"]
