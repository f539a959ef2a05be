"""The pytest plugin (entry point ``pytest11``): the ``smtpd_lite`` and ``smtpd`` fixtures.

::

    @pytest.mark.smtpd_options(auth=True, tls=True)
    def test_welcome_mail(smtpd_lite):
        app.send_welcome("user@example.com", smtp=(smtpd_lite.host, smtpd_lite.port))
        (message,) = smtpd_lite.wait_for(to="user@example.com")
        assert message.subject == "Welcome"

Both fixtures yield the object of :func:`smtpd_lite.testing.capture`, which
the ``smtpd_options`` marker configures.  ``smtpd`` is left to another
plugin that defines a fixture of that name (smtpdfix, pytest-smtpd).  This
is the only module of smtpd_lite that imports pytest, and only pytest
loads it.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator

import pytest

from .testing import Capture, capture

MARKER = ("smtpd_options(**capture_kwargs): options of smtpd_lite.testing.capture() "
          "for the smtpd_lite and smtpd fixtures")


def _configured_capture(request: pytest.FixtureRequest) -> Iterator[Capture]:
    marker = request.node.get_closest_marker("smtpd_options")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    with capture(*(marker.args if marker is not None else ()), **options) as server:
        yield server


@pytest.fixture
def smtpd_lite(request: pytest.FixtureRequest) -> Iterator[Capture]:
    """A running SMTP server on 127.0.0.1 that records every message it receives."""
    yield from _configured_capture(request)


class SmtpdFixture:
    """The ``smtpd`` fixture, registered only if no other plugin has one."""

    @pytest.fixture
    def smtpd(self, request: pytest.FixtureRequest) -> Iterator[Capture]:
        """The same server as the ``smtpd_lite`` fixture."""
        yield from _configured_capture(request)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    manager = config.pluginmanager
    this = sys.modules[__name__]
    others = [plugin for plugin in manager.get_plugins()
              if plugin is not this and _defines_fixture(plugin, "smtpd")]
    if not others and not manager.has_plugin("smtpd_lite.smtpd"):
        manager.register(SmtpdFixture(), "smtpd_lite.smtpd")


def _defines_fixture(plugin: object, name: str) -> bool:
    """True if ``plugin`` (a module or object) has a fixture called ``name``."""
    try:
        candidate = getattr(plugin, name, None)
    except Exception:               # a plugin object with odd attribute access
        return False
    if candidate is None:
        return False
    # pytest 8.4 wraps fixtures in FixtureFunctionDefinition; older versions
    # mark the function with _pytestfixturefunction.
    return (type(candidate).__name__ == "FixtureFunctionDefinition"
            or hasattr(candidate, "_pytestfixturefunction"))
