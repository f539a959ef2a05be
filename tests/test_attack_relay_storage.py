"""Attacks from outside on stored mail and on the relay: what must hold.

Each test drives a real server with a real client; the next hop, where
there is one, is a raw socket that misbehaves on purpose.
"""

import os
import smtplib

import pytest

from smtpd_lite import delivery
from smtpd_lite.testing import capture

MESSAGE = b"From: a@example.com\r\nSubject: attack\r\n\r\nroot::0:0::/root:/bin/sh\r\n"


def refused(port, message=MESSAGE):
    """Send one message; the 4xx reply to it (never a 250)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("a@example.com", ["b@example.com"], message)
        assert client.noop()[0] == 250          # the session is still in step
    code = caught.value.smtp_code
    assert 400 <= code < 500, caught.value
    return "%d %s" % (code, caught.value.smtp_error.decode())


# -- an mbox path an attacker prepared -------------------------------------------------


def test_an_mbox_that_is_a_symlink_is_refused_at_start(tmp_path):
    target = tmp_path / "passwd"
    target.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    link = tmp_path / "mail.mbox"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        delivery.MboxDelivery(str(link))


def test_an_mbox_replaced_by_a_symlink_is_never_written_through(tmp_path):
    target = tmp_path / "passwd"
    original = b"root:x:0:0:root:/root:/bin/bash\n"
    target.write_bytes(original)
    path = tmp_path / "mail.mbox"
    with capture(delivery.MboxDelivery(str(path))) as server:
        path.symlink_to(target)         # swapped in after the start
        assert refused(server.port).startswith("451 ")
        assert server.messages == []
    assert target.read_bytes() == original


def test_an_mbox_that_is_a_fifo_is_refused_without_hanging(tmp_path):
    path = tmp_path / "mail.mbox"
    with capture(delivery.MboxDelivery(str(path))) as server:
        os.mkfifo(path)
        assert refused(server.port).startswith("451 ")
        assert server.messages == []
    with pytest.raises(OSError, match="not a regular file"):
        delivery.MboxDelivery(str(path))
