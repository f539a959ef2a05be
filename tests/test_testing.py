"""smtpd_lite.testing.capture: the in-process server for test suites."""

import os
import smtplib
import socket
import threading
import time

import pytest

from smtpd_lite import SMTPError
from smtpd_lite.testing import capture

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
