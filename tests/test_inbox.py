"""The web inbox over HTTP (http.client against a live inbox) and its store."""

import http.client
import json
import os
import smtplib
import socket
import stat
import subprocess
import sys
import time

import pytest
from inboxes import make_message, running_inbox
from processes import free_port, start_cli, wait_for_port

from smtpd_lite.inbox import Store
from smtpd_lite.replies import SMTPError
from smtpd_lite.testing import capture


@pytest.fixture
def inbox():
    with running_inbox() as running:
        yield running


# --- the list ------------------------------------------------------------------

def test_a_message_sent_with_smtplib_is_listed_with_its_summary(inbox):
    inbox.send(subject="Welcome", to=("user@example.com", "other@example.com"),
               attachments=[("a.txt", "text/plain", b"x")])
    listing = inbox.json("/api/v1/messages")
    assert listing["total"] == 1
    (summary,) = listing["messages"]
    assert set(summary) == {"id", "mailfrom", "rcpttos", "subject", "received", "size",
                            "attachments", "read"}
    assert summary["mailfrom"] == "sender@example.com"
    assert summary["rcpttos"] == ["user@example.com", "other@example.com"]
    assert summary["subject"] == "Welcome"
    assert summary["received"].endswith("Z") and summary["received"][:2] == "20"
    assert summary["attachments"] == 1 and summary["read"] is False
    assert summary["size"] > 0 and isinstance(summary["id"], str)


def test_newest_first_with_paging(inbox):
    for number in range(5):
        inbox.send(subject="message %d" % number)
    page = inbox.json("/api/v1/messages?limit=2&offset=1")
    assert page["total"] == 5
    assert [summary["subject"] for summary in page["messages"]] == ["message 3", "message 2"]


def test_q_searches_sender_recipients_subject_and_text_and_total_counts_matches(inbox):
    inbox.send(subject="Invoice 42", text="pay now")
    inbox.send(subject="Hello", text="the Password reset link")
    inbox.send(subject="Other", mailfrom="billing@shop.example")
    inbox.send(subject="Another", to=("carol@example.org",))
    assert inbox.json("/api/v1/messages?q=invoice")["total"] == 1
    assert inbox.json("/api/v1/messages?q=PASSWORD")["messages"][0]["subject"] == "Hello"
    assert inbox.json("/api/v1/messages?q=billing@")["messages"][0]["subject"] == "Other"
    assert inbox.json("/api/v1/messages?q=carol")["messages"][0]["subject"] == "Another"
    found = inbox.json("/api/v1/messages?q=example&limit=1")
    assert found["total"] == 4 and len(found["messages"]) == 1
    assert inbox.json("/api/v1/messages?q=nothing-like-this")["total"] == 0


def test_bad_paging_is_400(inbox):
    assert inbox.request("GET", "/api/v1/messages?limit=x")[0] == 400


# --- one message ---------------------------------------------------------------

def test_detail_has_headers_text_html_links_attachments_and_marks_read(inbox):
    inbox.send(make_message(subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=", text="See https://example.com/a.",
                            html='<a href="https://example.com/b?x=1&amp;y=2">b</a>',
                            attachments=[("report.pdf", "application/pdf", b"%PDF-1")]))
    (summary,) = inbox.json("/api/v1/messages")["messages"]
    detail = inbox.json("/api/v1/messages/" + summary["id"])
    assert detail["subject"] == "Grüße" and detail["read"] is True
    assert ["Subject", "Grüße"] in detail["headers"]
    assert detail["text"] == "See https://example.com/a.\n"
    assert detail["html"].startswith('<a href="https://example.com/b')
    assert detail["links"] == ["https://example.com/a", "https://example.com/b?x=1&y=2"]
    assert detail["attachments"] == [{"filename": "report.pdf", "content_type": "application/pdf",
                                      "size": 6, "url": "/api/v1/messages/%s/attachments/0"
                                      % summary["id"]}]
    assert inbox.json("/api/v1/messages")["messages"][0]["read"] is True


def test_raw_is_the_message_as_received(inbox):
    data = b"From: a@example.com\r\nSubject: raw\r\n\r\nline one\r\n..dot line\r\n"
    inbox.send(data)
    (summary,) = inbox.json("/api/v1/messages")["messages"]
    status, headers, body = inbox.request("GET", "/api/v1/messages/%s/raw" % summary["id"])
    assert status == 200 and headers["Content-Type"] == "message/rfc822"
    assert body.endswith(data)      # after the Received header the server adds
    assert body.startswith(b"Received: ")


def test_one_attachment_is_a_download(inbox):
    inbox.send(b"Subject: files\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
               b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n"
               b"\r\nfirst\r\n--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment;"
               b" filename=\"=?utf-8?q?evil=22=0D=0ASet-Cookie:_x=3D1.html?=\"\r\n\r\n"
               b"<script>1</script>\r\n--b--\r\n")
    message_id = inbox.json("/api/v1/messages")["messages"][0]["id"]
    base = "/api/v1/messages/%s/attachments/" % message_id
    status, headers, body = inbox.request("GET", base + "1")
    assert status == 200 and body == b"<script>1</script>"
    assert headers["Content-Disposition"].startswith("attachment; filename=")
    assert "Set-Cookie" not in headers and "\r" not in headers["Content-Disposition"]
    assert "sandbox" in headers["Content-Security-Policy"]
    assert inbox.request("GET", base + "2")[0] == 404


def test_unknown_ids_are_404(inbox):
    for path in ("/api/v1/messages/99", "/api/v1/messages/99/raw", "/api/v1/messages/x",
                 "/api/v1/messages/99/attachments/0", "/nothing"):
        assert inbox.request("GET", path)[0] == 404, path
    assert inbox.request("DELETE", "/api/v1/messages/99")[0] == 404


def test_delete_one_and_all_are_204(inbox):
    for number in range(3):
        inbox.send(subject="m%d" % number)
    first = inbox.json("/api/v1/messages")["messages"][-1]["id"]
    status, _, body = inbox.request("DELETE", "/api/v1/messages/" + first)
    assert (status, body) == (204, b"")
    assert inbox.request("GET", "/api/v1/messages/" + first)[0] == 404
    assert inbox.json("/api/v1/messages")["total"] == 2
    assert inbox.request("DELETE", "/api/v1/messages")[0] == 204
    assert inbox.json("/api/v1/messages") == {"total": 0, "messages": []}


# --- events --------------------------------------------------------------------

def test_events_stream_sends_each_new_message_summary(inbox):
    with socket.create_connection(("127.0.0.1", inbox.web_port), timeout=5) as stream:
        stream.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while b"retry:" not in received:
            received += stream.recv(4096)
        assert received.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Type: text/event-stream" in received
        inbox.send(subject="live")
        deadline = time.monotonic() + 5
        while not (b"event: message\n" in received and received.endswith(b"\n\n")) \
                and time.monotonic() < deadline:
            received += stream.recv(4096)
    event = received.split(b"event: message\ndata: ", 1)[1].split(b"\n\n", 1)[0]
    summary = json.loads(event)
    assert summary["subject"] == "live" and summary["attachments"] == 0


def test_events_from_a_foreign_host_or_origin_are_refused(inbox):
    assert inbox.request("GET", "/api/v1/events", headers={"Host": "attacker.example"})[0] == 403
    assert inbox.request("GET", "/api/v1/events",
                         headers={"Origin": "http://attacker.example"})[0] == 403


# --- release -------------------------------------------------------------------

def test_release_without_the_option_is_403(inbox):
    inbox.send()
    message_id = inbox.json("/api/v1/messages")["messages"][0]["id"]
    status, _, _ = inbox.request("POST", "/api/v1/messages/%s/release" % message_id,
                                 body=b'{"to": ["x@example.com"]}',
                                 headers={"Content-Type": "application/json"})
    assert status == 403


def test_release_relays_to_the_operators_host_only():
    with capture() as smarthost, running_inbox(release=("127.0.0.1", smarthost.port)) as inbox:
        inbox.send(subject="to release")
        message_id = inbox.json("/api/v1/messages")["messages"][0]["id"]
        path = "/api/v1/messages/%s/release" % message_id
        json_type = {"Content-Type": "application/json"}
        body = json.dumps({"to": ["boss@example.com"], "host": "10.0.0.1", "port": 25})
        assert inbox.request("POST", path, body=body, headers=json_type)[0] == 204
        (released,) = smarthost.wait_for(1)
        assert released.rcpttos == ["boss@example.com"]
        assert released.message["Subject"] == "to release"
        for bad in (b'{"to": []}', b'{"to": "a@b"}', b'{"to": ["a@b\\r\\nRCPT TO:<c@d>"]}',
                    b"not json"):
            assert inbox.request("POST", path, body=bad, headers=json_type)[0] == 400, bad
        # A form post (no JSON type) is not a release request.
        assert inbox.request("POST", path, body=b"to=a@b",
                             headers={"Content-Type": "text/plain"})[0] == 400
        assert len(smarthost.messages) == 1


# --- safety --------------------------------------------------------------------

@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8026",
                                  "127.0.0.1.attacker.example", "localhost.attacker.example",
                                  "", "a b"])
def test_a_foreign_host_is_refused(inbox, host):
    inbox.send()
    for path in ("/", "/api/v1/messages", "/api/v1/messages/1/raw"):
        status, headers, body = inbox.request("GET", path, headers={"Host": host})
        assert status == 403, path
        assert b"Subject" not in body and b"sender@" not in body
        assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8026", "localhost", "LOCALHOST:1",
                                  "[::1]:8026", "app.localhost"])
def test_loopback_hosts_are_served(inbox, host):
    assert inbox.request("GET", "/api/v1/messages", headers={"Host": host})[0] == 200


@pytest.mark.parametrize("origin", ["http://attacker.example", "null", "https://127.0.0.1",
                                    "http://localhost:1"])
def test_a_cross_origin_delete_or_post_is_refused(inbox, origin):
    inbox.send()
    own = "127.0.0.1:%d" % inbox.web_port
    headers = {"Origin": origin, "Host": own}
    assert inbox.request("DELETE", "/api/v1/messages", headers=headers)[0] == 403
    assert inbox.request("DELETE", "/api/v1/messages/1", headers=headers)[0] == 403
    assert inbox.request("POST", "/api/v1/messages/1/release", body=b'{"to": ["a@b"]}',
                         headers=dict(headers, **{"Content-Type": "application/json"}))[0] == 403
    assert inbox.json("/api/v1/messages")["total"] == 1


def test_same_origin_and_no_origin_deletes_are_served(inbox):
    inbox.send()
    inbox.send()
    own = "127.0.0.1:%d" % inbox.web_port
    assert inbox.request("DELETE", "/api/v1/messages/1",
                         headers={"Origin": "http://" + own, "Host": own})[0] == 204
    assert inbox.request("DELETE", "/api/v1/messages/2")[0] == 204


def test_every_response_has_nosniff_and_a_restrictive_policy(inbox):
    inbox.send(html="<p>hi</p>", attachments=[("a.bin", "application/octet-stream", b"1")])
    paths = ["/", "/app.js", "/app.css", "/api/v1/messages", "/api/v1/messages/1",
             "/api/v1/messages/1/raw", "/api/v1/messages/1/view",
             "/api/v1/messages/1/attachments/0", "/missing"]
    for path in paths:
        status, headers, _ = inbox.request("GET", path)
        assert headers["X-Content-Type-Options"] == "nosniff", path
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy, path
        assert "frame-ancestors 'none'" in policy or path.endswith("/view"), path
        assert "http:" not in policy and "*" not in policy, path
    status, headers, _ = inbox.request("DELETE", "/api/v1/messages/1")
    assert status == 204 and headers["X-Content-Type-Options"] == "nosniff"


def test_the_html_view_loads_nothing_remote_unless_asked_for(inbox):
    inbox.send(html='<img src="http://127.0.0.1:9/x.png">')
    _, headers, body = inbox.request("GET", "/api/v1/messages/1/view")
    policy = headers["Content-Security-Policy"]
    assert policy.startswith("sandbox ") and "allow-scripts" not in policy
    assert "img-src data:;" in policy and "frame-ancestors 'self'" in policy
    assert body == b'<img src="http://127.0.0.1:9/x.png">\n'
    _, headers, _ = inbox.request("GET", "/api/v1/messages/1/view?remote=1")
    assert "img-src data: http: https:;" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"]


# --- what is stored ------------------------------------------------------------

def test_only_messages_that_got_a_250_are_kept():
    def destination(peer, mailfrom, rcpttos, data):
        if b"refuse-with-reply" in data:
            return "550 5.7.1 Not here"
        if b"refuse-with-error" in data:
            raise SMTPError(451, "4.3.0 Try later")
        return None

    with running_inbox(destination) as inbox:
        for word in ("refuse-with-reply", "refuse-with-error"):
            with pytest.raises(smtplib.SMTPResponseException):
                inbox.send(subject=word)
        inbox.send(subject="accepted")
        listing = inbox.json("/api/v1/messages")
    assert [summary["subject"] for summary in listing["messages"]] == ["accepted"]


def test_the_oldest_messages_are_pruned_past_the_maximum():
    with running_inbox(max_messages=3) as inbox:
        for number in range(5):
            inbox.send(subject="m%d" % number)
        listing = inbox.json("/api/v1/messages")
    assert listing["total"] == 3
    assert [summary["subject"] for summary in listing["messages"]] == ["m4", "m3", "m2"]


def test_a_message_the_parser_chokes_on_is_still_stored_raw():
    store = Store()
    junk = b"\xff\xfe\x00Subject: \x80\x81\r\nContent-Type: multipart/mixed\r\n\r\n\xc3("
    summary = store.add("a@example.com", ["b@example.com"], junk)
    assert store.get(summary["id"])[1] == junk
    assert store.list()[0] == 1
    store.close()


def test_a_persistent_inbox_keeps_its_messages(tmp_path):
    path = tmp_path / "inbox.sqlite"
    store = Store(path)
    store.add("a@example.com", ["b@example.com"], b"Subject: kept\r\n\r\nbody\r\n")
    store.close()
    store = Store(path)
    total, (summary,) = store.list()
    assert (total, summary["subject"]) == (1, "kept")
    store.close()


def test_the_database_and_its_journal_files_are_owner_only_whatever_the_umask(tmp_path):
    path = tmp_path / "inbox.sqlite"
    previous = os.umask(0)
    try:
        store = Store(path)
        store.add("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nbody\r\n")
        files = [name for name in os.listdir(tmp_path) if name.startswith("inbox.sqlite")]
        assert "inbox.sqlite-wal" in files
        for name in files:
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
        store.close()
    finally:
        os.umask(previous)


def test_an_existing_database_keeps_its_mode(tmp_path):
    path = tmp_path / "inbox.sqlite"
    Store(path).close()
    os.chmod(path, 0o640)
    Store(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


# --- the command line ------------------------------------------------------------

def test_cli_web_serves_the_inbox_beside_the_smtp_listener():
    web_port = free_port()
    server, smtp_port = start_cli("--sink", "--listen", "{address}",
                                  "--web", "127.0.0.1:%d" % web_port, "--inbox-max", "5")
    try:
        wait_for_port(web_port)
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.send_message(make_message(subject="via the CLI"))
        connection = http.client.HTTPConnection("127.0.0.1", web_port, timeout=10)
        connection.request("GET", "/api/v1/messages")
        listing = json.loads(connection.getresponse().read())
        connection.close()
        assert listing["messages"][0]["subject"] == "via the CLI"
    finally:
        server.stop()


@pytest.mark.parametrize("arguments", [["--inbox", "x.sqlite"], ["--release", "127.0.0.1:25"],
                                       ["--web", "--workers", "2"],
                                       ["--web", "-c", "DebuggingServer"]])
def test_cli_inbox_flags_need_web_and_one_process(arguments):
    destination = [] if "-c" in arguments else ["--sink"]
    completed = subprocess.run([sys.executable, "-m", "smtpd_lite", *destination, *arguments],
                               capture_output=True, timeout=30)
    assert completed.returncode == 2
    assert b"--web" in completed.stderr


# --- summaries as the list shows them ------------------------------------------

@pytest.mark.parametrize("data", [
    b"Subject: plain\r\n\r\nbody\r\n",
    b"Subject: folded\r\n  over two lines\r\nX: y\r\n\r\nbody\r\n",
    b"Subject: =?utf-8?b?w6ljaG8=?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xc3\xa9\r\n",
    b"Subject: latin\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9\r\n",
    b"Subject: qp\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n",
    b"Subject: only html\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n",
    b"Subject: file\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; "
    b"filename=a.txt\r\n\r\nx\r\n",
    b"subject: lower case\r\nSUBJECT: second\r\n\r\nbody",
    b"No header block at all",
    b"\r\nbody without headers\r\n",
])
def test_summaries_agree_with_the_full_parse(data):
    store = Store()
    summary = store.add("a@example.com", ["b@example.com"], data)
    _, parsed, _ = store.detail(summary["id"])
    assert summary["subject"] == parsed.subject
    assert summary["attachments"] == len(parsed.attachments)
    text = (parsed.text or "").lower().strip()
    assert store.list(query=text[:20])[0] == 1     # the text is what q searches
    store.close()


@pytest.mark.parametrize("module", ["server.py", "session.py", "compat.py", "connection.py"])
def test_the_core_never_imports_the_inbox(module):
    import ast
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "smtpd_lite", module)
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names]
    assert not [name for name in imported if "inbox" in name]
