"""Stored mail is private: owner-only files and folders whatever the umask."""

import mailbox
import os
import smtplib
import stat

import pytest
from servers import capture

MESSAGE = "From: a@example.com\r\nSubject: private\r\n\r\npersonal\r\n"


@pytest.fixture
def umask_022():
    """The usual umask, which would leave new files readable by every local user."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def send(port, message=MESSAGE):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], message)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_mbox_is_0600(cli, tmp_path, umask_022):
    path = tmp_path / "mail.mbox"
    server, port = cli("--mbox", str(path))
    send(port)
    assert server.stop() == 0
    assert mode(path) == 0o600
    assert os.listdir(tmp_path) == ["mail.mbox"]        # no lock file beside it
    assert len(mailbox.mbox(str(path), create=False)) == 1


def test_existing_mbox_keeps_its_mode(cli, tmp_path, umask_022):
    path = tmp_path / "mail.mbox"
    path.write_bytes(b"")
    path.chmod(0o640)
    server, port = cli("--mbox", str(path))
    send(port)
    assert server.stop() == 0
    assert mode(path) == 0o640
    assert "readable by other users" not in "".join(server.stderr)


def test_new_maildir_folders_are_0700_and_messages_0600(cli, tmp_path, umask_022):
    maildir = tmp_path / "home" / "Maildir"       # "home" is created too
    server, port = cli("--maildir", str(maildir))
    send(port)
    assert server.stop() == 0
    for folder in ("home", "home/Maildir", "home/Maildir/cur", "home/Maildir/new",
                   "home/Maildir/tmp"):
        assert mode(tmp_path / folder) == 0o700, folder
    (name,) = os.listdir(maildir / "new")
    assert mode(maildir / "new" / name) == 0o600


def test_spooled_message_is_0600(umask_022):
    modes = []

    def handler(peer, mailfrom, rcpttos, data):
        modes.append(stat.S_IMODE(os.fstat(data.fileno()).st_mode))

    with capture(handler, data_as_file=True, spool_threshold=1024) as server:
        send(server.port, MESSAGE + ("x" * 70 + "\r\n") * 100)
    assert modes == [0o600]


@pytest.mark.parametrize("destination", ["--mbox", "--maildir"])
def test_cli_warns_once_when_an_existing_destination_is_readable_by_others(
        cli, tmp_path, destination):
    path = tmp_path / "mail"
    if destination == "--mbox":
        path.write_bytes(b"")
    else:
        for folder in ("cur", "new", "tmp"):
            (path / folder).mkdir(parents=True)
    path.chmod(0o644 if destination == "--mbox" else 0o755)
    server, port = cli(destination, str(path))
    send(port)
    assert server.stop() == 0
    warnings = [line for line in "".join(server.stderr).splitlines()
                if "readable by other users" in line]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "WARNING" in warnings[0]
    assert mode(path) in (0o644, 0o755)         # the operator's choice is kept
