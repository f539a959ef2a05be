"""Relaying to a smarthost: TLS, login, 421 and store-and-relay, against a real next hop.

The next hop is a second smtpd_lite server in this process that requires
STARTTLS (or implicit TLS) and AUTH, with a certificate from a throwaway
CA.  Every failure must reach our client as a 4xx after end-of-data, with
nothing delivered, and leave our client's session in step.
"""

import contextlib
import logging
import mailbox
import smtplib
import ssl
import warnings

import pytest
from processes import free_port
from servers import capture

from smtpd_lite import SMTPError, delivery
from smtpd_lite.relay import NextHop, relay_tls_context

USER = "relay@example.org"
PASSWORD = "pa:ss wörd"
MESSAGE = b"From: a@example.com\r\nMessage-ID: <1@example.com>\r\nSubject: relayed\r\n\r\nHi\r\n"


class Accounts:
    """The next hop's auth_handler: one account; remembers each attempt."""

    def __init__(self):
        self.attempts = []

    def __call__(self, peer, mechanism, username, password, shared):
        self.attempts.append((mechanism, username))
        return (username, password) == (USER, PASSWORD)


@pytest.fixture
def accounts():
    return Accounts()


@pytest.fixture
def smarthost(certificates, accounts):
    """``smarthost(**options)`` → a next hop that requires STARTTLS and AUTH."""
    with contextlib.ExitStack() as stack:
        def start(**options):
            settings = dict(tls_context=certificates.context, require_tls=True,
                            auth_handler=accounts, auth_required=True)
            settings.update(options)
            return stack.enter_context(capture(**settings))
        yield start


@pytest.fixture
def front():
    """``front(handler)`` → our server, relaying with ``handler``."""
    with contextlib.ExitStack() as stack:
        yield lambda handler, **options: stack.enter_context(capture(handler, **options))


def relay_to(upstream, certificates, **options):
    settings = dict(username=USER, password=PASSWORD, timeout=10,
                    ssl_context=relay_tls_context(certificates.cafile))
    settings.update(options)
    return delivery.RelayDelivery(upstream.host, upstream.port, **settings)


def session(server):
    client = smtplib.SMTP(server.host, server.port, timeout=20)
    client.ehlo()
    return client


def refused(client, message=MESSAGE):
    """Send on ``client``; the reply it got, which must be a 4xx after end-of-data."""
    with pytest.raises(smtplib.SMTPDataError) as caught:
        client.sendmail("a@example.com", ["b@example.com"], message)
    code, text = caught.value.smtp_code, caught.value.smtp_error.decode()
    assert 400 <= code < 500 and code != 421, (code, text)
    return "%d %s" % (code, text)


def still_in_step(client):
    assert client.noop()[0] == 250
    assert client.rset()[0] == 250


# -- delivered ------------------------------------------------------------------------


def test_delivered_over_starttls_as_the_configured_user(smarthost, front, certificates,
                                                         accounts):
    upstream = smarthost()
    ours = front(relay_to(upstream, certificates))
    with session(ours) as client:
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    (message,) = upstream.wait_for(1)
    assert message.tls is True
    assert message.auth_user == USER
    assert accounts.attempts == [("PLAIN", USER)]       # preferred when offered
    assert b" with ESMTPSA id " in message.data          # RFC 3848: TLS and AUTH
    assert message.data.endswith(MESSAGE)


def test_login_is_used_when_plain_is_not_offered(smarthost, front, certificates, accounts):
    upstream = smarthost(auth_mechanisms=("LOGIN", "CRAM-MD5"))
    ours = front(relay_to(upstream, certificates))
    with session(ours) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert upstream.wait_for(1)[0].auth_user == USER
    assert accounts.attempts == [("LOGIN", USER)]


def test_implicit_tls_to_a_port_465_style_next_hop(smarthost, front, certificates):
    upstream = smarthost(implicit_tls=True, require_tls=False)
    ours = front(relay_to(upstream, certificates, tls="implicit"))
    with session(ours) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    (message,) = upstream.wait_for(1)
    assert message.tls is True and message.auth_user == USER


def test_opportunistic_sends_in_plain_text_to_a_next_hop_without_starttls(front):
    with capture() as upstream:
        ours = front(delivery.RelayDelivery(upstream.host, upstream.port, timeout=10))
        with session(ours) as client:
            client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        assert upstream.wait_for(1)[0].tls is False


def test_opportunistic_uses_starttls_when_offered(front, certificates):
    with capture(tls_context=certificates.context) as upstream:
        ours = front(delivery.RelayDelivery(
            upstream.host, upstream.port, timeout=10,
            ssl_context=relay_tls_context(certificates.cafile)))
        with session(ours) as client:
            client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        assert upstream.wait_for(1)[0].tls is True


def test_insecure_encrypts_without_checking_the_certificate(front, certificates):
    with capture(tls_context=certificates.context) as upstream:
        ours = front(delivery.RelayDelivery(upstream.host, upstream.port, timeout=10,
                                            ssl_context=relay_tls_context(insecure=True)))
        with session(ours) as client:
            client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        assert upstream.wait_for(1)[0].tls is True


# -- refused: a 4xx, nothing delivered, the session in step ---------------------------


def test_wrong_password_is_a_4xx_and_an_error_naming_user_and_hop(smarthost, front,
                                                                  certificates, caplog):
    upstream = smarthost()
    ours = front(relay_to(upstream, certificates, password="wrong password"))
    with caplog.at_level(logging.ERROR, logger="smtpd_lite"), session(ours) as client:
        assert refused(client) == "451 4.7.0 Error: cannot log in to the relay host"
        still_in_step(client)
        assert refused(client).startswith("451 4.7.0 ")
    assert upstream.messages == []
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors and all(USER in text and "127.0.0.1:%d" % upstream.port in text
                          and "535" in text for text in errors)
    assert not any("wrong password" in record.getMessage() for record in caplog.records)


def test_required_tls_refuses_a_next_hop_without_starttls(front, accounts):
    with capture(auth_handler=accounts, auth_allow_plaintext=True) as upstream:
        for options in ({"tls": "required"}, {"username": USER, "password": PASSWORD}):
            ours = front(delivery.RelayDelivery(upstream.host, upstream.port, timeout=10,
                                                **options))
            with session(ours) as client:
                assert refused(client) == "451 4.7.4 Error: relay host offers no TLS"
                still_in_step(client)
        assert upstream.messages == []
    assert accounts.attempts == []          # the password never crossed in clear text


def test_a_password_is_never_sent_in_clear_text_even_when_opportunistic(front, accounts):
    with capture(auth_handler=accounts, auth_allow_plaintext=True) as upstream:
        ours = front(delivery.RelayDelivery(upstream.host, upstream.port, timeout=10,
                                            tls="opportunistic", username=USER,
                                            password=PASSWORD))
        with session(ours) as client:
            assert refused(client).startswith("451 4.7.4 ")
        assert upstream.messages == [] and accounts.attempts == []


def test_an_unverified_certificate_is_refused_without_falling_back(smarthost, front):
    upstream = smarthost(require_tls=False, auth_required=False)
    # The system store does not know the throwaway CA; the next hop would
    # take the message in plain text, so only a fallback could deliver it.
    ours = front(delivery.RelayDelivery(upstream.host, upstream.port, timeout=10))
    with session(ours) as client:
        assert refused(client) == "451 4.7.5 Error: TLS with the relay host failed"
        still_in_step(client)
    assert upstream.messages == []


def test_a_certificate_for_another_name_is_refused(front, certificates, tmp_path):
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    elsewhere = authority.issue_cert("mail.example.org")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    elsewhere.configure_cert(server_context)
    client_context = relay_tls_context()
    authority.configure_trust(client_context)
    with capture(tls_context=server_context) as upstream:
        ours = front(delivery.RelayDelivery(upstream.host, upstream.port, timeout=10,
                                            ssl_context=client_context))
        with session(ours) as client:
            assert refused(client).startswith("451 4.7.5 ")
        assert upstream.messages == []


def test_a_next_hop_below_tls_1_2_is_refused(front, certificates):
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        with warnings.catch_warnings():     # TLS 1.0 and 1.1 are deprecated: the point
            warnings.simplefilter("ignore", DeprecationWarning)
            server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
            server_context.minimum_version = ssl.TLSVersion.TLSv1
            server_context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    server_context.load_cert_chain(certificates.certfile, certificates.keyfile)
    with capture(tls_context=server_context) as upstream:
        ours = front(delivery.RelayDelivery(upstream.host, upstream.port, timeout=10,
                                            ssl_context=relay_tls_context(certificates.cafile)))
        with session(ours) as client:
            assert refused(client).startswith("451 4.7.5 ")
        assert upstream.messages == []


def test_a_next_hop_that_is_down_is_451_without_exception_text(front):
    ours = front(delivery.RelayDelivery("127.0.0.1", free_port(), timeout=10))
    with session(ours) as client:
        assert refused(client) == "451 4.4.1 Error: relay host unavailable"
        still_in_step(client)
        assert refused(client) == "451 4.4.1 Error: relay host unavailable"


def test_421_at_the_greeting_is_451_and_the_next_message_goes_through(smarthost, front,
                                                                      certificates):
    upstream = smarthost(max_connections=1)
    ours = front(relay_to(upstream, certificates))
    with session(ours) as client:
        with smtplib.SMTP(upstream.host, upstream.port, timeout=10) as holder:
            holder.noop()                   # the next hop's one slot is taken
            assert refused(client) == "451 4.7.0 Error: relay host closed the connection"
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    assert len(upstream.wait_for(1)) == 1


def closing_once(where):
    """A callback for the next hop that answers 421 the first time it runs."""
    calls = []

    def callback(*arguments):
        calls.append(arguments)
        if len(calls) == 1:
            raise SMTPError(421, "Service shutting down", "4.3.2")
        return True if where != "handler" else None
    return callback


@pytest.mark.parametrize("where", ["mail_handler", "rcpt_handler", "handler"])
def test_421_after_mail_rcpt_or_data_is_451_and_the_session_goes_on(front, certificates,
                                                                   where):
    callback = closing_once(where)
    options = dict(tls_context=certificates.context, require_tls=True,
                   auth_handler=Accounts(), auth_required=True)
    if where == "handler":
        upstream = front(callback, **options)
    else:
        upstream = front(None, **options, **{where: callback})
    ours = front(relay_to(upstream, certificates))
    with session(ours) as client:
        assert refused(client) == "451 4.3.2 Error: relay host closed the connection"
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    assert len(upstream.wait_for(1)) == 1


# -- store and relay ------------------------------------------------------------------


def test_store_and_relay_puts_the_message_in_both_places(smarthost, front, certificates,
                                                         tmp_path):
    upstream = smarthost()
    store = delivery.MaildirDelivery(str(tmp_path / "Maildir"))
    ours = front(delivery.StoreAndRelay(store, relay_to(upstream, certificates)))
    with session(ours) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    (relayed,) = upstream.wait_for(1)
    (stored,) = mailbox.Maildir(str(tmp_path / "Maildir"), create=False)
    assert relayed.message["Message-ID"] == stored["Message-ID"] == "<1@example.com>"
    assert stored["X-RcptTo"] == "b@example.com"


def test_store_and_relay_keeps_the_copy_when_the_relay_fails(front, tmp_path):
    def refuse(peer, mailfrom, rcpttos, data):
        raise SMTPError(550, "Content rejected", "5.7.1")

    path = tmp_path / "mail.mbox"
    with capture(refuse) as upstream:
        relay = delivery.RelayDelivery(upstream.host, upstream.port, timeout=10)
        ours = front(delivery.StoreAndRelay(delivery.MboxDelivery(str(path)), relay))
        with session(ours) as client:
            # Stored here already: even a permanent refusal is only a 4xx.
            assert refused(client) == "451 4.7.1 Content rejected"
            assert refused(client) == "451 4.7.1 Content rejected"       # the retry
    copies = list(mailbox.mbox(str(path), create=False))
    assert [copy["Message-ID"] for copy in copies] == ["<1@example.com>"] * 2
    assert copies[0]["Received"] != copies[1]["Received"]     # each with its own queue id


def test_store_and_relay_does_not_relay_what_it_could_not_store(front, tmp_path):
    def full(peer, mailfrom, rcpttos, data):
        raise SMTPError(552, "Mailbox full", "5.2.2")

    with capture() as upstream:
        relay = delivery.RelayDelivery(upstream.host, upstream.port, timeout=10)
        ours = front(delivery.StoreAndRelay(full, relay))
        with session(ours) as client:
            assert refused(client) == "451 4.2.2 Mailbox full"
        assert upstream.messages == []


# -- the API's rules -------------------------------------------------------------------


def test_credentials_with_tls_off_are_refused():
    with pytest.raises(ValueError, match="clear text"):
        delivery.RelayDelivery("127.0.0.1", 25, tls="off", username=USER, password=PASSWORD)
    with pytest.raises(ValueError):
        NextHop("127.0.0.1", 25, tls="sometimes")
    with pytest.raises(ValueError):
        NextHop("127.0.0.1", 25, username=USER)


def test_the_client_context_is_tls_1_2_and_checks_names():
    context = relay_tls_context()
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert NextHop("127.0.0.1", username=USER, password=PASSWORD).tls == "required"
    assert NextHop("127.0.0.1").tls == "opportunistic"
