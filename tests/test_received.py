"""The Received header (pure)."""

import pytest

from smtpd_lite.received import received_header, transmission_type

DATE = "Tue, 24 Nov 2026 23:06:50 +0000"


def header(**overrides):
    values = dict(helo="client.example", ip="192.0.2.1", hostname="mx.example",
                  appname="smtpd_lite", protocol="ESMTP", queue_id="ABC123",
                  recipients=["bob@example.org"], date=DATE)
    values.update(overrides)
    return received_header(**values).decode()


def test_one_recipient():
    assert header() == (
        "Received: from client.example ([192.0.2.1])\r\n"
        "\tby mx.example (smtpd_lite) with ESMTP id ABC123\r\n"
        "\tfor <bob@example.org>; " + DATE + "\r\n")


def test_several_recipients_are_not_revealed():
    assert header(recipients=["a@x.example", "b@y.example"]) == (
        "Received: from client.example ([192.0.2.1])\r\n"
        "\tby mx.example (smtpd_lite) with ESMTP id ABC123; " + DATE + "\r\n")


def test_reverse_name_ipv6_and_tls():
    text = header(ip="2001:db8::1", reverse_name="host.example",
                  tls_comment="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
                  protocol="ESMTPS")
    assert text.startswith(
        "Received: from client.example (host.example [IPv6:2001:db8::1])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        "\tby mx.example (smtpd_lite) with ESMTPS id ABC123\r\n")


def test_ipv4_mapped_address():
    assert "([192.0.2.7])" in header(ip="::ffff:192.0.2.7")


@pytest.mark.parametrize("helo", ["evil\r\nX-Injected: yes", "a) by forged (b", "x;y",
                                  "a\x00b", "bü"])
def test_client_values_cannot_inject(helo):
    text = header(helo=helo, reverse_name="r\r\nX-Evil: 1")
    lines = text.split("\r\n")
    assert len(lines) == 4 and lines[-1] == ""
    assert "X-Injected" not in "".join(line for line in lines if line.startswith("X"))
    first = lines[0]
    assert first.count("(") == 1 and first.count(")") == 1
    assert ";" not in first


@pytest.mark.parametrize("flags, expected", [
    ({"esmtp": False}, "SMTP"), ({}, "ESMTP"), ({"tls": True}, "ESMTPS"),
    ({"auth": True}, "ESMTPA"), ({"tls": True, "auth": True}, "ESMTPSA"),
    ({"smtputf8": True}, "UTF8SMTP"), ({"smtputf8": True, "tls": True}, "UTF8SMTPS"),
    ({"smtputf8": True, "auth": True}, "UTF8SMTPA"),
    ({"smtputf8": True, "tls": True, "auth": True}, "UTF8SMTPSA"),
    ({"lmtp": True}, "LMTP"), ({"lmtp": True, "tls": True, "auth": True}, "LMTPSA"),
    ({"lmtp": True, "smtputf8": True}, "UTF8LMTP"),
])
def test_transmission_types(flags, expected):
    assert transmission_type(**flags) == expected


@pytest.mark.parametrize("recipient", ['"x>; by evil.example; Mon"@example.com',
                                       '"john doe"@example.com', '"a(b)"@example.com'])
def test_for_clause_left_out_for_quoted_recipients(recipient):
    text = header(recipients=[recipient])
    assert "\tfor " not in text and "evil" not in text
    assert text.count(";") == 1


def test_for_clause_keeps_utf8_addresses():
    assert "\tfor <jörg@例え.jp>; " in header(recipients=["jörg@例え.jp"])
