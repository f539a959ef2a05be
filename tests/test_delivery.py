"""smtpd_lite.delivery: the command line's destinations, each behind a live server."""

import io
import mailbox
import os
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest
from servers import capture

from smtpd_lite import SMTPError, delivery

MESSAGE = b"From: a@example.com\r\nSubject: stored\r\n\r\nFrom here on\r\n.dot\r\nend\r\n"


def send(server, message=MESSAGE, sender="a@example.com", recipients=("b@example.com",),
         **options):
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        return client.sendmail(sender, list(recipients), message, **options)


# -- print and sink -----------------------------------------------------------


def test_print_writes_envelope_headers_and_body():
    stream = io.StringIO()
    with capture(delivery.PrintDelivery(stream), received_header=False) as server:
        send(server, recipients=["b@example.com", "c@example.com"])
    assert stream.getvalue() == (
        "---------- MESSAGE FOLLOWS ----------\n"
        "X-Peer: 127.0.0.1\nX-MailFrom: a@example.com\nX-RcptTo: b@example.com, c@example.com\n"
        "From: a@example.com\nSubject: stored\n\nFrom here on\n.dot\nend\n"
        "------------ END MESSAGE ------------\n")


def test_print_shows_control_characters_instead_of_sending_them_to_the_terminal():
    stream = io.StringIO()
    hostile = (b"Subject: \x1b]0;owned\x07title\r\n\r\n\x1b[2J\x1b[31mred\xc2\x9b1m\tkept"
               b"over\x7f\r\n\xe2\x80\xaeevil\xe2\x80\xa8split\r\n")
    with capture(delivery.PrintDelivery(stream), received_header=False) as server:
        send(server, hostile)
    printed = stream.getvalue()
    assert ("Subject: \\x1b]0;owned\\x07title\n\n\\x1b[2J\\x1b[31mred\\x9b1m\tkept"
            "over\\x7f\n\\u202eevil\\u2028split\n") in printed
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u202e]", printed)


def test_sink_accepts_everything():
    with capture(delivery.SinkDelivery()) as server:
        assert send(server) == {}


# -- Maildir --------------------------------------------------------------------

MAILDIR_NAME = re.compile(r"\d+\.M\d+P%dQ\d+\.\S+\Z" % os.getpid())


def test_maildir_stores_in_new_with_mailbox_names(tmp_path):
    maildir = tmp_path / "Maildir"
    with capture(delivery.MaildirDelivery(str(maildir)), received_header=False) as server:
        send(server, sender="", recipients=["b@example.com", "c@example.com"])
        send(server)
    assert sorted(os.listdir(maildir)) == ["cur", "new", "tmp"]
    assert os.listdir(maildir / "tmp") == []
    names = os.listdir(maildir / "new")
    assert len(names) == 2 and all(MAILDIR_NAME.match(name) for name in names)
    contents = sorted((maildir / "new" / name).read_bytes() for name in names)
    assert contents[0] == (b"Return-Path: <>\nX-RcptTo: b@example.com, c@example.com\n"
                           b"From: a@example.com\nSubject: stored\n\nFrom here on\n.dot\nend\n")
    messages = list(mailbox.Maildir(str(maildir), create=False))
    assert {message["Subject"] for message in messages} == {"stored"}


def test_maildir_names_are_unique_under_concurrency(tmp_path):
    store = delivery.MaildirDelivery(str(tmp_path))
    threads = [threading.Thread(target=lambda: [store(("127.0.0.1", 1), "a@example.com",
                                                      ["b@example.com"], MESSAGE)
                                                for _ in range(25)])
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(os.listdir(tmp_path / "new")) == 100


def test_maildir_failure_is_451_and_leaves_nothing_in_tmp(tmp_path):
    store = delivery.MaildirDelivery(str(tmp_path))
    os.rmdir(tmp_path / "new")
    with capture(store) as server:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(server)
    assert refused.value.smtp_code == 451
    assert os.listdir(tmp_path / "tmp") == []


# -- mbox -------------------------------------------------------------------------


def test_mbox_appends_messages_mailbox_can_read(tmp_path):
    path = tmp_path / "mail.mbox"
    with capture(delivery.MboxDelivery(str(path)), received_header=False) as server:
        send(server)
        send(server, b"Subject: second\r\n\r\nbody\r\n", sender="")
    text = path.read_bytes()
    assert text.startswith(b"From a@example.com ")
    assert b"\n>From here on\n" in text
    assert re.search(rb"\n\nFrom MAILER-DAEMON \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n", text)
    first, second = mailbox.mbox(str(path), create=False)
    assert first["Subject"] == "stored" and first["Return-Path"] == "<a@example.com>"
    assert first.get_payload() == ">From here on\n.dot\nend\n"
    assert second["Subject"] == "second" and second.get_payload() == "body\n"


LOCK_HOLDER = """
import mailbox, sys, time
box = mailbox.mbox(sys.argv[1])
box.lock()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
box.unlock()
"""


def test_mbox_waits_for_the_lock_mailbox_takes(tmp_path):
    path = tmp_path / "mail.mbox"
    path.write_bytes(b"")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path), "1.0"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        started = time.monotonic()
        delivery.MboxDelivery(str(path))(("127.0.0.1", 1), "a@example.com",
                                         ["b@example.com"], MESSAGE)
        assert time.monotonic() - started > 0.5
    finally:
        holder.wait(10)
    assert len(mailbox.mbox(str(path), create=False)) == 1


# -- relay ------------------------------------------------------------------------


@pytest.fixture
def relay_to():
    """``relay_to(host, port)`` → a capture() front server relaying to ``host:port``."""
    with_fronts = []

    def start(host, port, **options):
        front = capture(delivery.RelayDelivery(host, port, timeout=10), **options)
        with_fronts.append(front)
        return front.__enter__()

    yield start
    for front in with_fronts:
        front.__exit__(None, None, None)


def test_relay_delivers_with_our_received_header(relay_to):
    with capture() as upstream:
        front = relay_to(upstream.host, upstream.port)
        send(front, recipients=["x@example.com", "y@example.com"])
        (message,) = upstream.wait_for(1)
    assert (message.mailfrom, message.rcpttos) == ("a@example.com",
                                                   ["x@example.com", "y@example.com"])
    received = message.message.get_all("Received")
    assert len(received) == 2       # the front's, then the upstream's
    assert message.data.endswith(MESSAGE)


def test_relay_passes_body_smtputf8_and_dsn_parameters(relay_to):
    with capture() as upstream:
        front = relay_to(upstream.host, upstream.port)
        with smtplib.SMTP(front.host, front.port, timeout=10) as client:
            client.ehlo()
            client.mail("grüße@example.com",
                        ["BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=id+2Bx+3Dy"])
            client.rcpt("zoë@example.com", ["NOTIFY=SUCCESS,FAILURE",
                                            "ORCPT=rfc822;zo+2Be@example.com"])
            client.data("Subject: s\r\n\r\nGrüße\r\n".encode())
        (message,) = upstream.wait_for(1)
    assert message.mailfrom == "grüße@example.com"
    assert message.rcpttos == ["zoë@example.com"]
    assert {key: value for key, value in message.mail_params.items() if key != "SIZE"} == \
        {"BODY": "8BITMIME", "SMTPUTF8": True, "RET": "HDRS", "ENVID": "id+x=y"}
    assert message.rcpt_params == {"zoë@example.com": {"NOTIFY": ("SUCCESS", "FAILURE"),
                                                        "ORCPT": "rfc822;zo+e@example.com"}}


def test_relay_refusal_of_data_comes_back_with_its_code(relay_to):
    def refuse(peer, mailfrom, rcpttos, data):
        raise SMTPError(550, "Content rejected", "5.7.1")

    with capture(refuse) as upstream:
        front = relay_to(upstream.host, upstream.port)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(front)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error == b"5.7.1 Content rejected"


def test_relay_is_all_or_nothing_when_a_recipient_is_refused(relay_to):
    def rcpt_handler(peer, mailfrom, rcptto):
        if rcptto.startswith("full"):
            raise SMTPError(452, "Mailbox full", "4.2.2")
        return not rcptto.startswith("gone")

    with capture(rcpt_handler=rcpt_handler) as upstream:
        front = relay_to(upstream.host, upstream.port)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(front, recipients=["ok@example.com", "gone@example.com"])
        assert refused.value.smtp_code == 550
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(front, recipients=["gone@example.com", "full@example.com", "ok@example.com"])
        assert refused.value.smtp_code == 452      # temporary wins: the client retries
        assert upstream.messages == []


def test_relay_to_nothing_is_451(relay_to):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        front = relay_to(*unused.getsockname())
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(front)
    assert refused.value.smtp_code == 451
    assert refused.value.smtp_error.startswith(b"4.4.1 ")


def test_xtext_encoding():
    assert delivery.encode_xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert delivery.encode_xtext("plain!~\x01") == "plain!~+01"
    assert delivery.encode_xtext("zoë") == "zoë"
