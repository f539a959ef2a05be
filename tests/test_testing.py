"""smtpd_lite.testing.capture: the in-process server for test suites."""

import email.message
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from processes import environment
from wire import RawClient

from smtpd_lite import SMTPError
from smtpd_lite.testing import Attachment, Rule, capture

MESSAGE = "From: app@example.com\r\nTo: user@example.com\r\nSubject: Reset\r\n\r\nClick.\r\n"


def send(mail, message=MESSAGE, sender="app@example.com", recipients=("user@example.com",)):
    with smtplib.SMTP(mail.host, mail.port, timeout=10) as client:
        return client.sendmail(sender, list(recipients), message)


def open_descriptors():
    return set(os.listdir("/proc/self/fd"))


def test_records_envelope_data_parsed_message_and_extras():
    with capture() as mail:
        assert (mail.host, mail.port) == mail.server.server_address[:2]
        send(mail)
        (message,) = mail.wait_for(1)
    assert message.peer[0] == "127.0.0.1"
    assert (message.mailfrom, message.rcpttos) == ("app@example.com", ["user@example.com"])
    assert message.data.startswith(b"Received: ")
    assert message.data.endswith(MESSAGE.encode())
    assert message.message["Subject"] == "Reset"
    assert message.message.get_content() == "Click.\n"
    assert message.helo == message.extras["helo"]
    assert message.queue_id in message.data.decode()
    assert message.tls is False
    with pytest.raises(AttributeError):
        assert message.no_such_extra is None
    assert "app@example.com" in repr(message)


def test_wait_for_returns_the_first_n_and_times_out():
    with capture() as mail:
        threading.Timer(0.2, send, args=(mail,)).start()
        assert len(mail.wait_for(1, timeout=5)) == 1
        send(mail, sender="second@example.com")
        first, second = mail.wait_for(2)
        assert second.mailfrom == "second@example.com"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            mail.wait_for(3, timeout=0.3)
        assert time.monotonic() - started < 2


def test_clear_forgets_messages():
    with capture() as mail:
        send(mail)
        mail.wait_for(1)
        mail.clear()
        assert mail.messages == []
        send(mail, sender="after@example.com")
        assert mail.wait_for(1)[0].mailfrom == "after@example.com"


def test_handler_decides_the_reply_and_only_accepted_messages_are_recorded():
    def handler(peer, mailfrom, rcpttos, data, queue_id):
        if mailfrom.startswith("spam"):
            raise SMTPError(550, "No spam", "5.7.1")
        return None

    with capture(handler) as mail:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(mail, sender="spam@example.com")
        assert refused.value.smtp_code == 550
        send(mail)
        assert [message.mailfrom for message in mail.wait_for(1)] == ["app@example.com"]
        assert len(mail.messages) == 1


def test_options_pass_through():
    with capture(max_size=100, received_header=False) as mail:
        with smtplib.SMTP(mail.host, mail.port, timeout=10) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == "100"
        send(mail)
        assert mail.wait_for(1)[0].data == MESSAGE.encode()


def test_data_as_file_is_recorded_as_bytes_and_the_handler_gets_a_file():
    seen = []

    def handler(peer, mailfrom, rcpttos, data):
        seen.append(data.read())

    with capture(handler, data_as_file=True, received_header=False) as mail:
        send(mail)
        (message,) = mail.wait_for(1)
    assert seen == [MESSAGE.encode()]
    assert message.data == MESSAGE.encode()


def test_unknown_option_is_refused_at_once():
    with pytest.raises(TypeError):
        with capture(no_such_option=1):
            pass


def test_leaves_no_thread_or_socket_behind():
    threads = set(threading.enumerate())
    descriptors = open_descriptors()
    with capture() as mail:
        send(mail)
        idle = smtplib.SMTP(mail.host, mail.port, timeout=10)   # still connected at exit
        idle.ehlo()
        mail.wait_for(1)
    # The idle client was told the server is going away, then disconnected.
    assert idle.sock.recv(1024).startswith(b"421")
    idle.close()
    assert open_descriptors() == descriptors
    assert [thread.name for thread in set(threading.enumerate()) - threads] == []


def test_the_port_is_closed_on_exit():
    with capture() as mail:
        port = mail.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# -- strict=False: what mainstream MTAs accept --------------------------------------

def test_lenient_by_default_bare_lf_and_long_lines_are_recorded():
    long_line = "x" * 5000
    raw = "Subject: Sloppy\nX-Long: %s\n\nbody with bare LF\nlast\r\n" % long_line
    with capture(received_header=False) as mail:
        send(mail, message=raw.encode())
        (message,) = mail.wait_for()
    assert message.data == raw.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    assert message.subject == "Sloppy"


def test_lenient_by_default_addresses_without_a_domain_and_long_local_parts():
    long_local = "bounce-" + "x" * 80
    with capture() as mail:
        refused = send_raw_envelope(mail, "root", ["alice", long_local + "@example.com"])
        (message,) = mail.wait_for()
    assert refused == {}
    assert message.mailfrom == "root"
    assert message.rcpttos == ["alice", long_local + "@example.com"]
    with capture(strict=True) as mail:
        with pytest.raises(smtplib.SMTPSenderRefused) as error:
            send_raw_envelope(mail, "root", ["alice"])
        assert error.value.smtp_code == 501


def send_raw_envelope(mail, sender, recipients):
    with smtplib.SMTP(mail.host, mail.port, timeout=10) as client:
        return client.sendmail(sender, recipients, b"Subject: x\r\n\r\nbody\r\n")


def test_strict_keeps_the_server_defaults_and_explicit_options_win():
    with capture(strict=True) as mail:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(mail, message=b"Subject: x\n\nbare\n")
        assert refused.value.smtp_code == 550
    with capture(bare_eol="reject") as mail:
        with pytest.raises(smtplib.SMTPDataError):
            send(mail, message=b"Subject: x\n\nbare\n")
        assert mail.messages == []


# -- the record: subject, text, html, attachments, links ---------------------------------

def multipart_message():
    message = email.message.EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "user@example.com"
    message["Subject"] = "=?utf-8?q?Caf=C3=A9_menu?="
    message.set_content("Menu: https://example.com/menu?day=1.\nWrite to mailto:chef@example.com")
    message.add_alternative('<p><a href="https://example.com/menu?day=1&amp;x=2">Menu</a> '
                            '<a href="https://example.com/menu?day=1.">again</a></p>',
                            subtype="html")
    message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                           filename="menu.pdf")
    message.add_attachment("a,b\n1,2\n", subtype="csv", filename="prices.csv")
    return message


def test_record_gives_subject_text_html_attachments_and_links():
    with capture() as mail:
        send(mail, message=multipart_message().as_bytes())
        (message,) = mail.wait_for()
    assert message.subject == "Café menu"
    assert message.text == ("Menu: https://example.com/menu?day=1.\n"
                            "Write to mailto:chef@example.com\n")
    assert message.html.startswith("<p><a href=")
    assert message.attachments == [
        Attachment("menu.pdf", "application/pdf", b"%PDF-1.4 fake"),
        Attachment("prices.csv", "text/csv", b"a,b\n1,2\n"),
    ]
    assert message.links == ["https://example.com/menu?day=1", "mailto:chef@example.com",
                             "https://example.com/menu?day=1&x=2"]


def test_a_message_without_subject_or_parts():
    with capture() as mail:
        send(mail, message="To: user@example.com\r\n\r\nplain\r\n")
        (message,) = mail.wait_for()
    assert (message.subject, message.text, message.html) == (None, "plain\n", None)
    assert (message.attachments, message.links) == ([], [])


def nested_multipart(depth):
    body = "Content-Type: text/plain\r\n\r\ninner https://example.com/deep\r\n"
    for level in range(depth):
        boundary = "b%d" % level
        body = ('Content-Type: multipart/mixed; boundary="%s"\r\n\r\n--%s\r\n%s\r\n--%s--\r\n'
                % (boundary, boundary, body, boundary))
    return "From: app@example.com\r\nSubject: Deep\r\nMIME-Version: 1.0\r\n" + body


def test_a_message_the_parser_chokes_on_is_recorded_once_with_its_bytes():
    calls = []

    def handler(peer, mailfrom, rcpttos, data):
        calls.append(mailfrom)

    raw = nested_multipart(1500)
    with capture(handler, received_header=False) as mail:
        assert send(mail, message=raw) == {}          # 250, not 451
        (message,) = mail.wait_for()
    assert calls == ["app@example.com"]
    assert message.data == raw.encode()
    assert message.subject == "Deep"
    assert message.message["Subject"] == "Deep"


def test_deeply_nested_parts_that_parse_are_walked_without_recursion():
    with capture() as mail:
        send(mail, message=nested_multipart(400))
        (message,) = mail.wait_for()
    assert message.text == "inner https://example.com/deep\n"
    assert message.links == ["https://example.com/deep"]


# -- wait_for filters ---------------------------------------------------------------

def test_wait_for_filters_by_recipient_sender_and_subject():
    with capture() as mail:
        send(mail, message="Subject: Newsletter\r\n\r\nx\r\n", recipients=["list@example.com"])
        send(mail, message="Subject: Your password reset\r\n\r\nx\r\n",
             recipients=["other@example.com", "User@Example.com"])
        threading.Timer(0.2, send, kwargs={
            "mail": mail, "sender": "late@example.com",
            "message": "Subject: Password reset again\r\n\r\nx\r\n"}).start()
        (reset,) = mail.wait_for(to="user@example.COM", subject="password reset")
        assert reset.rcpttos == ["other@example.com", "User@Example.com"]
        (late,) = mail.wait_for(mailfrom="late@example.com")
        assert late.subject == "Password reset again"
        assert len(mail.wait_for(2, to="user@example.com")) == 2
        with pytest.raises(TimeoutError) as timed_out:
            mail.wait_for(to="nobody@example.com", timeout=0.3)
    assert "to='nobody@example.com'" in str(timed_out.value)
    assert "Newsletter" in str(timed_out.value)


# -- auth ---------------------------------------------------------------------------

def test_auth_true_accepts_any_credentials_without_tls():
    with capture(auth=True) as mail:
        with smtplib.SMTP(mail.host, mail.port, timeout=10) as client:
            client.login("anyone", "anything")
            client.sendmail("app@example.com", ["user@example.com"], MESSAGE)
        (message,) = mail.wait_for()
    assert message.auth_user == "anyone"


def test_auth_dict_checks_plain_login_and_cram_md5():
    with capture(auth={"app": "s3cret"}) as mail:
        for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
            with smtplib.SMTP(mail.host, mail.port, timeout=10) as client:
                client.ehlo()
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    client.auth(mechanism, _authobject(client, mechanism, "app", "wrong"))
                client.auth(mechanism, _authobject(client, mechanism, "app", "s3cret"))
                client.sendmail("app@example.com", ["user@example.com"], MESSAGE)
        assert [message.auth_user for message in mail.wait_for(3)] == ["app"] * 3
        with smtplib.SMTP(mail.host, mail.port, timeout=10) as client:
            client.ehlo()
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.auth("PLAIN", _authobject(client, "PLAIN", "nobody", "s3cret"))


def _authobject(client, mechanism, user, password):
    client.user, client.password = user, password
    return getattr(client, "auth_" + mechanism.lower().replace("-", "_"))


def test_without_auth_none_is_offered():
    with capture() as mail:
        with smtplib.SMTP(mail.host, mail.port, timeout=10) as client:
            client.ehlo()
            assert not client.has_extn("auth")


# -- TLS ----------------------------------------------------------------------------

def test_starttls_with_the_client_context():
    with capture(tls=True) as mail:
        assert os.path.exists(mail.cafile)
        with smtplib.SMTP("localhost", mail.port, timeout=10) as client:
            client.starttls(context=mail.client_context)
            client.sendmail("app@example.com", ["user@example.com"], MESSAGE)
        (message,) = mail.wait_for()
        cafile = mail.cafile
    assert message.tls is True
    assert not os.path.exists(cafile)


def test_implicit_tls_with_the_client_context():
    with capture(tls="implicit", auth=True) as mail:
        with smtplib.SMTP_SSL(mail.host, mail.port, timeout=10,
                              context=mail.client_context) as client:
            client.login("user", "pw")
            client.sendmail("app@example.com", ["user@example.com"], MESSAGE)
        (message,) = mail.wait_for()
    assert (message.tls, message.auth_user) == (True, "user")


def test_the_cafile_serves_clients_of_their_own():
    with capture(tls=True) as mail:
        context = ssl.create_default_context(cafile=mail.cafile)
        with smtplib.SMTP(mail.host, mail.port, timeout=10) as client:
            client.starttls(context=context)
            client.noop()
        untrusting = ssl.create_default_context()
        with smtplib.SMTP(mail.host, mail.port, timeout=10) as client:
            with pytest.raises(ssl.SSLError):
                client.starttls(context=untrusting)


WITHOUT_TRUSTME = '''
import smtplib, sys
sys.modules["trustme"] = None           # import trustme now raises ImportError
from smtpd_lite.testing import capture
try:
    with capture(tls=True) as mail:
        with smtplib.SMTP("localhost", mail.port, timeout=10) as client:
            client.starttls(context=mail.client_context)
            client.sendmail("a@example.com", ["b@example.com"], "Subject: x\\r\\n\\r\\ny\\r\\n")
        print("recorded", len(mail.wait_for(1)))
except RuntimeError as error:
    print("error:", error)
'''


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_without_trustme_the_openssl_command_makes_the_certificate():
    result = subprocess.run([sys.executable, "-c", WITHOUT_TRUSTME], capture_output=True,
                            text=True, env=environment(), timeout=120)
    assert result.stdout.strip() == "recorded 1", result.stderr


def test_without_trustme_or_openssl_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TRUSTME], capture_output=True,
                            text=True, env=environment(PATH=str(tmp_path)), timeout=120)
    assert "trustme" in result.stdout and "openssl" in result.stdout, result.stderr


def test_tls_must_be_true_or_implicit():
    with pytest.raises(ValueError):
        with capture(tls="yes"):
            pass


# -- rules: failure injection --------------------------------------------------------

def test_a_times_1_rule_fails_the_first_attempt_and_the_retry_is_recorded():
    with capture(rules=[Rule("data", reply="451 4.3.0 Try later", times=1)]) as mail:
        with pytest.raises(smtplib.SMTPDataError) as first:
            send(mail)
        assert (first.value.smtp_code, first.value.smtp_error) == (451, b"4.3.0 Try later")
        assert mail.messages == []
        send(mail)                      # the retry
        assert len(mail.wait_for()) == 1


def test_a_drop_rule_closes_the_connection_without_a_reply():
    with capture(rules=[Rule("rcpt", "doomed@*", reply="drop")]) as mail:
        client = RawClient(mail.host, mail.port)
        client.reply()
        client.command("EHLO client.example")
        assert client.command("MAIL FROM:<app@example.com>").startswith("250")
        client.send("RCPT TO:<Doomed@Example.com>\r\n")
        assert client.closed()
        assert client.pending == b""
        client.close()
        with smtplib.SMTP(mail.host, mail.port, timeout=10) as smtp:   # the server lives on
            with pytest.raises(smtplib.SMTPServerDisconnected):
                smtp.sendmail("app@example.com", ["doomed@example.com"], MESSAGE)
        send(mail)
        assert len(mail.wait_for()) == 1


def test_a_data_drop_rule_records_nothing():
    with capture(rules=[Rule("data", reply="drop", times=1)]) as mail:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            send(mail)
        send(mail, sender="retry@example.com")
        (message,) = mail.wait_for()
    assert message.mailfrom == "retry@example.com"


def test_refusing_one_recipient_records_the_message_for_the_others():
    rules = [Rule("rcpt", "bounce@*", "550 5.1.1 No such user")]
    with capture(rules=rules) as mail:
        refused = send(mail, recipients=["bounce@example.com", "user@example.com"])
        assert refused == {"bounce@example.com": (550, b"5.1.1 No such user")}
        (message,) = mail.wait_for()
    assert message.rcpttos == ["user@example.com"]


def test_a_mail_rule_refuses_the_sender_and_user_callbacks_run_after_the_rules():
    checked = []

    def mail_handler(peer, mailfrom):
        checked.append(mailfrom)
        return True

    rules = [Rule("mail", "spam@*", "553 5.7.1 Go away")]
    with capture(rules=rules, mail_handler=mail_handler) as mail:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            send(mail, sender="SPAM@example.com")
        assert refused.value.smtp_code == 553
        send(mail)
        mail.wait_for()
    assert checked == ["app@example.com"]


def test_a_data_rule_sees_the_accepted_recipients_and_the_first_match_wins():
    rules = [Rule("rcpt", "gone@*", "550 5.1.1 Gone"),
             Rule("data", "gone@*", "554 5.7.1 never: gone@ was refused at RCPT"),
             Rule("data", "vip@*", "452 4.2.2 Mailbox full", times=1),
             Rule("data", "vip@*", "554 5.7.1 Second rule")]
    with capture(rules=rules) as mail:
        with pytest.raises(smtplib.SMTPDataError) as first:
            send(mail, recipients=["gone@example.com", "vip@example.com"])
        assert first.value.smtp_code == 452
        with pytest.raises(smtplib.SMTPDataError) as second:
            send(mail, recipients=["vip@example.com"])
        assert second.value.smtp_code == 554
        assert second.value.smtp_error == b"5.7.1 Second rule"
        send(mail, recipients=["gone@example.com", "user@example.com"])
        assert mail.wait_for()[0].rcpttos == ["user@example.com"]


def test_a_connect_rule_answers_instead_of_the_greeting_then_the_next_connection_is_served():
    with capture(rules=[Rule("connect", reply="421 4.3.2 Busy", times=1)]) as mail:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP(mail.host, mail.port, timeout=10)
        assert refused.value.smtp_code == 421
        send(mail)
        assert len(mail.wait_for()) == 1


def test_a_connect_drop_and_a_delay():
    rules = [Rule("connect", reply="drop", times=1), Rule("mail", reply="451 4.3.0 Slow",
                                                         delay=0.5, times=1)]
    with capture(rules=rules) as mail:
        client = RawClient(mail.host, mail.port)
        assert client.closed()
        client.close()
        with smtplib.SMTP(mail.host, mail.port, timeout=10) as smtp:
            smtp.ehlo()
            started = time.monotonic()
            assert smtp.mail("app@example.com")[0] == 451
            assert time.monotonic() - started >= 0.5


def test_rules_work_over_tls_and_with_a_handler():
    rules = [Rule("data", "*@example.org", "550 5.7.1 Not here")]
    handled = []
    with capture(lambda *message: handled.append(message[1]), tls=True, rules=rules) as mail:
        with smtplib.SMTP("localhost", mail.port, timeout=10) as client:
            client.starttls(context=mail.client_context)
            with pytest.raises(smtplib.SMTPDataError):
                client.sendmail("app@example.com", ["user@example.org"], MESSAGE)
            client.sendmail("app@example.com", ["user@example.com"], MESSAGE)
        assert [message.rcpttos for message in mail.wait_for()] == [["user@example.com"]]
    assert handled == ["app@example.com"]


@pytest.mark.parametrize("arguments", [
    ("greet",), ("mail", "*", "250 OK"), ("mail", "*", "55 short"), ("mail", "*", "drop", 0),
    ("mail", "*", "550 5.1.1 x", None, -1), ("mail", "*", "550 4.1.1 class mismatch"),
])
def test_malformed_rules_are_refused_when_made(arguments):
    with pytest.raises(ValueError):
        Rule(*arguments)


def test_rules_from_the_command_line_form():
    assert Rule.parse("rcpt:bounce@*=550 5.1.1 No such user") == Rule(
        "rcpt", "bounce@*", "550 5.1.1 No such user")
    assert Rule.parse("DATA:*=451 4.3.0 Later;times=2;delay=0.5") == Rule(
        "data", "*", "451 4.3.0 Later", times=2, delay=0.5)
    assert Rule.parse("connect:=drop") == Rule("connect", "*", "drop")
    for text in ("rcpt", "rcpt:x", "rcpt:x=550 no;tims=2", "rcpt:x=550 no;times=x"):
        with pytest.raises(ValueError):
            Rule.parse(text)
