"""Shared fixtures: a live server on 127.0.0.1 port 0 and a byte-exact raw client."""

import ssl
import types

import pytest
from processes import start_cli
from servers import capture
from wire import RawClient

import smtpd_lite


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
def cli():
    """``cli(*arguments)`` → (ServerProcess, port); stopped with SIGTERM afterwards."""
    started = []

    def start(*arguments, cwd=None):
        server, port = start_cli(*arguments, cwd=cwd)
        started.append(server)
        return server, port

    yield start
    for server in started:
        server.close()


@pytest.fixture
def client(mail, connect):
    return connect(mail)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    """A throwaway CA and a certificate for localhost and 127.0.0.1: files and contexts."""
    trustme = pytest.importorskip("trustme")
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    issued = authority.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile, cafile = (str(folder / name) for name in ("cert.pem", "key.pem", "ca.pem"))
    issued.cert_chain_pems[0].write_to_path(certfile)
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(certfile, append=True)
    issued.private_key_pem.write_to_path(keyfile)
    authority.cert_pem.write_to_path(cafile)
    return types.SimpleNamespace(
        certfile=certfile, keyfile=keyfile, cafile=cafile,
        context=smtpd_lite.tls_context(certfile, keyfile),
        client_context=ssl.create_default_context(cafile=cafile))
