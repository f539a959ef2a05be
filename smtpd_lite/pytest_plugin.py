"""The pytest plugin (entry point ``pytest11``): the ``smtpd`` fixture.

::

    def test_welcome_mail(smtpd):
        app.send_welcome("user@example.com", smtp=(smtpd.host, smtpd.port))
        (message,) = smtpd.wait_for(1)
        assert message.rcpttos == ["user@example.com"]

The fixture yields the object of :func:`smtpd_lite.testing.capture`.  This is
the only module of smtpd_lite that imports pytest, and only pytest loads it.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from .testing import Capture, capture


@pytest.fixture
def smtpd() -> Iterator[Capture]:
    """A running SMTP server on 127.0.0.1 that records every message it receives."""
    with capture() as server:
        yield server
