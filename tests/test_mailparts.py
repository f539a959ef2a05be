"""mailparts: what the test server's records and the web inbox show of a message.

Pure functions over raw octets, so these tests call them directly; the
records and the inbox are tested end to end over SMTP in their own files.
"""

from smtpd_lite import mailparts

MIXED = (b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  du jour\r\n"
         b"From: chef@example.com\r\nReceived: one\r\nX-Menu: yes\r\nReceived: two\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
         b"--B\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n"
         b"Cr\xe8me: https://example.com/menu?day=1&amp;x=2. Or mailto:chef@example.com!\r\n"
         b"--B\r\nContent-Type: text/html\r\n\r\n"
         b"<a href=\"https://example.com/h?a=1&amp;b=2\">x</a>\r\n"
         b"--B\r\nContent-Type: text/plain\r\n"
         b"Content-Disposition: attachment; filename=\"a.txt\"\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n--B--\r\n")


def nested(depth):
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (n, n)
                    for n in range(depth))
    return b"Subject: deep\r\n" + head + b"Content-Type: text/plain\r\n\r\ncore\r\n"


def test_fields_of_a_multipart_message():
    message = mailparts.parse(MIXED)
    assert mailparts.header(message, "Subject") == "café du jour"
    assert mailparts.header(message, "Cc") is None
    assert [name for name, _ in mailparts.headers(message)][:5] == [
        "Subject", "From", "Received", "X-Menu", "Received"]
    assert mailparts.body(message, "text/plain").startswith("Crème: ")
    assert "href" in mailparts.body(message, "text/html")
    assert mailparts.attachments(message) == [mailparts.Attachment("a.txt", "text/plain", b"hi")]


def test_links_are_unescaped_trimmed_and_listed_once_in_order():
    message = mailparts.parse(MIXED)
    text, html = mailparts.body(message, "text/plain"), mailparts.body(message, "text/html")
    assert mailparts.find_links(text, html, text) == [
        "https://example.com/menu?day=1&x=2", "mailto:chef@example.com",
        "https://example.com/h?a=1&b=2"]
    assert mailparts.find_links(None, "") == []


def test_any_nesting_depth_is_walked_and_an_unparsable_one_keeps_its_headers(caplog):
    assert mailparts.body(mailparts.parse(nested(400)), "text/plain").strip() == "core"
    # Deeper than the email package's recursive parser goes: headers only.
    message = mailparts.parse(nested(3000))
    assert "does not parse" in caplog.text
    assert mailparts.header(message, "Subject") == "deep"


def test_bad_input_is_read_as_far_as_it_goes():
    message = mailparts.parse(b"Subject: x\r\nContent-Type: text/plain; charset=no-such\r\n"
                              b"Content-Disposition: attachment; filename*=bogus''%ZZ\r\n\r\n"
                              b"\xff body\r\n")
    assert mailparts.header(message, "Subject") == "x"
    (attachment,) = mailparts.attachments(message)
    assert attachment.data == b"\xff body\n"
    assert mailparts.body(mailparts.parse(b"Content-Type: text/plain; charset=no-such\r\n\r\n"
                                          b"\xff ok\r\n"), "text/plain") == "\ufffd ok\n"
    assert mailparts.body(mailparts.parse(b""), "text/plain") == ""
    assert mailparts.parse(b"\x00\xff\r\n\r\n") is not None
