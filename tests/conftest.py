"""Shared fixtures: a live server on 127.0.0.1 port 0 and a byte-exact raw client."""

import pytest
from wire import RawClient

from smtpd_lite.testing import capture


@pytest.fixture
def mail():
    with capture() as running:
        yield running


@pytest.fixture
def connect():
    """``connect(mail, ehlo="client.example")`` → RawClient past greeting (and EHLO)."""
    clients = []

    def open_client(server, ehlo="client.example"):
        client = RawClient(server.host, server.port)
        clients.append(client)
        greeting = client.reply()
        assert greeting.startswith("220 ")
        if ehlo:
            assert client.command("EHLO " + ehlo).startswith("250")
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def client(mail, connect):
    return connect(mail)
