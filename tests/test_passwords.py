"""Specification of smtpd_lite.passwords: hashes, the auth file and its handler."""

import base64
import hashlib
import re
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from processes import proc_status, start_cli
from wire import RawClient

from smtpd_lite import SMTPError, passwords
from smtpd_lite.passwords import (
    PBKDF2_ITERATIONS,
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    file_auth_handler,
    hash_password,
    load_auth_file,
    verify_password,
)

# Cheap costs keep the suite fast; the defaults are tested once, below.
FAST = {"n": 16, "r": 1, "p": 1, "iterations": 10}
PEER = ("192.0.2.1", 54321)

needs_scrypt = pytest.mark.skipif(
    not hasattr(hashlib, "scrypt"), reason="hashlib.scrypt missing")


@pytest.fixture
def no_scrypt(monkeypatch):
    """Act as on a Python whose OpenSSL has no scrypt."""
    monkeypatch.setattr(passwords, "_scrypt", None)


def fast_hash(password):
    return hash_password(password, **FAST)


def b64(data):
    return base64.b64encode(data).decode("ascii")


def write(tmp_path, text):
    path = tmp_path / "users"
    path.write_bytes(text.encode("utf-8"))
    return path


# -- hash_password / verify_password -----------------------------------------

def test_defaults_are_sound():
    assert (SCRYPT_N, SCRYPT_R, SCRYPT_P) == (2 ** 14, 8, 5)
    assert PBKDF2_ITERATIONS >= 600000


@needs_scrypt
def test_default_hash_is_scrypt_and_verifies():
    encoded = hash_password("correct horse")
    assert re.fullmatch(r"scrypt\$16384\$8\$5\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=", encoded)
    assert verify_password("correct horse", encoded) is True
    assert verify_password("correct horsf", encoded) is False


@needs_scrypt
def test_scrypt_hash_records_its_cost():
    assert hash_password("pw", **FAST).startswith("scrypt$16$1$1$")


def test_pbkdf2_fallback_without_scrypt(no_scrypt):
    encoded = hash_password("correct horse", iterations=1000)
    assert re.fullmatch(r"pbkdf2_sha256\$1000\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=", encoded)
    assert verify_password("correct horse", encoded) is True
    assert verify_password("Correct horse", encoded) is False


def test_pbkdf2_default_iterations(no_scrypt, monkeypatch):
    calls = []
    real = hashlib.pbkdf2_hmac

    def spy(name, password, salt, iterations, dklen=None):
        calls.append((name, iterations))
        return real(name, password, salt, 1, dklen)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", spy)
    assert hash_password("pw").startswith("pbkdf2_sha256$600000$")
    assert calls == [("sha256", 600000)]


def test_pbkdf2_matches_the_stdlib_computation():
    salt = b"0123456789abcdef"
    expected = hashlib.pbkdf2_hmac("sha256", "p\u00e4ss".encode(), salt, 7)
    encoded = f"pbkdf2_sha256$7${b64(salt)}${b64(expected)}"
    assert verify_password("p\u00e4ss", encoded) is True
    assert verify_password("pass", encoded) is False


@needs_scrypt
def test_scrypt_matches_the_stdlib_computation():
    salt = b"0123456789abcdef"
    expected = hashlib.scrypt(b"pw", salt=salt, n=32, r=2, p=3, dklen=32)
    encoded = f"scrypt$32$2$3${b64(salt)}${b64(expected)}"
    assert verify_password("pw", encoded) is True


def test_same_password_gets_a_new_salt_each_time():
    assert fast_hash("pw") != fast_hash("pw")


@pytest.mark.parametrize("password", ["", "a\x00b"])
def test_hash_password_refuses_what_auth_could_never_send(password):
    with pytest.raises(ValueError):
        hash_password(password, **FAST)


def test_hash_password_refuses_text_that_is_not_unicode_without_echoing_it():
    with pytest.raises(ValueError) as caught:
        hash_password("secret\udcff", **FAST)
    assert "secret" not in str(caught.value)
    assert "\udcff" not in str(caught.value)


def test_verify_password_is_false_for_text_that_is_not_unicode():
    assert verify_password("pw\udcff", fast_hash("pw")) is False


@settings(max_examples=25, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=40),
       st.text(max_size=40))
def test_hash_verify_round_trip(password, other):
    encoded = fast_hash(password)
    assert verify_password(password, encoded) is True
    assert verify_password(other, encoded) is (other == password)


@pytest.mark.parametrize("encoded", [
    "",
    "hunter2",                                            # plain text
    "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",   # bcrypt
    "{SSHA}abcdefgh",
    "scrypt$16$1$1$c2FsdHNhbHRzYWx0c2FsdA==",              # missing hash
    "scrypt$16$1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==$x",
    "scrypt$15$1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",   # N not 2**k
    "scrypt$1$1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "scrypt$0$1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "scrypt$16$0$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "scrypt$16$-1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "scrypt$16$ 1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "scrypt$16$\u0661$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",  # Arabic-Indic 1
    "scrypt$16$01$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "scrypt$1073741824$8$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",  # > 1 GiB
    "scrypt$16$1$1$$aGFzaGhhc2hoYXNoaGFzaA==",               # empty salt
    "scrypt$16$1$1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA==",         # unpadded
    "scrypt$16$1$1$c2Fs dA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "scrypt$16$1$1$c2FsdA==$aGFzaA==",                       # hash under 16 octets
    "SCRYPT$16$1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "pbkdf2_sha256$1000$c2FsdHNhbHRzYWx0c2FsdA==",
    "pbkdf2_sha256$0$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "pbkdf2_sha256$abc$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "pbkdf2_sha256$1000$c2FsdHNhbHRzYWx0c2FsdA==$!!!!",
    "pbkdf2_sha1$1000$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
])
def test_verify_password_refuses_unrecognised_encodings(encoded):
    with pytest.raises(ValueError):
        verify_password("hunter2", encoded)


def test_scrypt_hash_without_scrypt_is_an_error_not_a_silent_false(no_scrypt):
    encoded = "scrypt$16$1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA=="
    with pytest.raises(ValueError, match="scrypt"):
        verify_password("pw", encoded)


def test_error_never_quotes_the_encoded_value():
    with pytest.raises(ValueError) as caught:
        verify_password("x", "hunter2-the-real-password")
    assert "hunter2" not in str(caught.value)


# -- load_auth_file ----------------------------------------------------------

def test_load_auth_file_reads_users_skipping_blanks_and_comments(tmp_path):
    alice, bob = fast_hash("a-secret"), fast_hash("b-secret")
    path = write(tmp_path, (
        "# accounts for the relay\n"
        "\n"
        f"alice:{alice}\n"
        "   \n"
        "  # an indented comment\n"
        f"bob@example.org:{bob}\r\n"
        f"  j\u00fcrgen:{alice}  \n"))
    assert load_auth_file(path) == {
        "alice": alice, "bob@example.org": bob, "j\u00fcrgen": alice}


def test_load_auth_file_accepts_a_str_path_and_no_final_newline(tmp_path):
    encoded = fast_hash("pw")
    path = write(tmp_path, f"alice:{encoded}")
    assert load_auth_file(str(path)) == {"alice": encoded}


def test_load_auth_file_ignores_a_utf8_bom(tmp_path):
    encoded = fast_hash("pw")
    path = tmp_path / "users"
    path.write_bytes(b"\xef\xbb\xbfalice:" + encoded.encode())
    assert load_auth_file(path) == {"alice": encoded}


def test_load_auth_file_empty_file_has_no_users(tmp_path):
    assert load_auth_file(write(tmp_path, "# nobody yet\n")) == {}


def test_load_auth_file_refuses_plain_text_naming_the_line_not_the_secret(tmp_path):
    path = write(tmp_path, f"alice:{fast_hash('pw')}\n# comment\nbob:Tr0ub4dor&3\n")
    with pytest.raises(ValueError) as caught:
        load_auth_file(path)
    message = str(caught.value)
    assert "line 3" in message
    assert "plain-text" in message
    assert "Tr0ub4dor" not in message


@pytest.mark.parametrize("line", [
    "alice",                     # no colon: perhaps a bare password
    ":" + "x",                   # empty user
    "alice:",                    # empty hash
    "alice :" + "pbkdf2_sha256$1000$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
    "alice:pbkdf2_sha256$1000$c2FsdA==",
    # refused when loading, not at the first login: N must be a power of two
    "alice:scrypt$15$1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
])
def test_load_auth_file_refuses_malformed_lines(tmp_path, line):
    with pytest.raises(ValueError, match="line 2"):
        load_auth_file(write(tmp_path, f"# header\n{line}\n"))


SALT_AND_HASH = "c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA=="


@pytest.mark.parametrize("encoded, complaint", [
    ("pbkdf2_sha256$%d$" % (10 * PBKDF2_ITERATIONS + 1), "PBKDF2 iterations above 6000000"),
    ("pbkdf2_sha256$9999999999$", "PBKDF2 iterations above"),
    ("scrypt$1048576$8$1$", "more than 256 MiB"),            # 1 GiB per check
    ("scrypt$65536$8$16$", "N\\*r\\*p above 6553600"),       # 64 MiB, but 13 times the work
    ("scrypt$16$1073741823$1$", "more than 256 MiB"),
])
def test_load_auth_file_refuses_absurd_costs_naming_the_line(tmp_path, encoded, complaint):
    # Every login attempt, by anyone, pays for one check of such a hash.
    path = write(tmp_path, "alice:%s\nbob:%s%s\n" % (fast_hash("pw"), encoded, SALT_AND_HASH))
    with pytest.raises(ValueError, match="line 2: .*" + complaint) as caught:
        load_auth_file(path)
    assert "plain-text" not in str(caught.value)


def test_the_costliest_recommended_settings_still_load(tmp_path):
    path = write(tmp_path, "a:scrypt$131072$8$1$%s\nb:pbkdf2_sha256$1000000$%s\n"
                 % (SALT_AND_HASH, SALT_AND_HASH))
    assert set(load_auth_file(path)) == {"a", "b"}


def test_load_auth_file_refuses_a_colon_in_the_user_name(tmp_path):
    # Everything before the first colon is the user, so the rest is no hash.
    encoded = fast_hash("pw")
    with pytest.raises(ValueError, match="line 1"):
        load_auth_file(write(tmp_path, f"al:ice:{encoded}\n"))


def test_load_auth_file_refuses_duplicate_users(tmp_path):
    lines = [f"alice:{fast_hash('a')}", f"bob:{fast_hash('b')}", f"alice:{fast_hash('c')}"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 3.*duplicate"):
        load_auth_file(path)


def test_load_auth_file_refuses_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "users"
    path.write_bytes(b"alice:" + fast_hash("pw").encode() + b"\nb\xffob:secret\xfe\n")
    with pytest.raises(ValueError, match="line 2") as caught:
        load_auth_file(path)
    assert "secret" not in str(caught.value)


def test_load_auth_file_refuses_scrypt_hashes_where_scrypt_is_missing(tmp_path, monkeypatch):
    encoded = "scrypt$16$1$1$c2FsdHNhbHRzYWx0c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA=="
    path = write(tmp_path, f"alice:{encoded}\n")
    monkeypatch.setattr(passwords, "_scrypt", None)
    with pytest.raises(ValueError, match="line 1.*scrypt"):
        load_auth_file(path)


def test_load_auth_file_missing_file_raises_os_error(tmp_path):
    with pytest.raises(OSError):
        load_auth_file(tmp_path / "absent")


# -- file_auth_handler -------------------------------------------------------

@pytest.fixture
def users():
    return {"alice": fast_hash("a-secret"), "bob": fast_hash("b-secret")}


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_handler_accepts_the_right_password(users, mechanism):
    handler = file_auth_handler(users)
    assert handler(PEER, mechanism, "alice", "a-secret", None) is True
    assert handler(PEER, mechanism, "bob", "b-secret", None) is True


@pytest.mark.parametrize("username, password", [
    ("alice", "b-secret"),       # another user's password
    ("alice", "A-secret"),
    ("alice", ""),
    ("Alice", "a-secret"),       # user names are compared exactly
    ("alice ", "a-secret"),
    ("carol", "a-secret"),       # unknown user, even with a known password
    ("carol", "c-secret"),
])
def test_handler_refuses_wrong_credentials(users, username, password):
    assert file_auth_handler(users)(PEER, "PLAIN", username, password, None) is False


def test_handler_refuses_cram_md5_which_a_hash_cannot_check(users):
    from smtpd_lite.auth import cram_md5_digest
    challenge = "<1.2@mx>"
    digest = cram_md5_digest("a-secret", challenge)
    assert file_auth_handler(users)(PEER, "CRAM-MD5", "alice", digest, challenge) is False


def test_handler_refuses_unknown_mechanisms(users):
    assert file_auth_handler(users)(PEER, "XOAUTH2", "alice", "a-secret", None) is False


def test_handler_checks_a_hash_for_unknown_users_too(users, monkeypatch):
    checked = []
    real = passwords.verify_password

    def spy(password, encoded):
        checked.append(encoded)
        return real(password, encoded)

    handler = file_auth_handler(users)
    monkeypatch.setattr(passwords, "verify_password", spy)
    assert handler(PEER, "LOGIN", "mallory", "a-secret", None) is False
    assert handler(PEER, "LOGIN", "alice", "a-secret", None) is True
    assert len(checked) == 2
    assert all(encoded in users.values() for encoded in checked)


def test_handler_with_no_users_refuses_everyone():
    assert file_auth_handler({})(PEER, "PLAIN", "alice", "a-secret", None) is False


def test_handler_validates_every_hash_up_front():
    with pytest.raises(ValueError):
        file_auth_handler({"alice": fast_hash("pw"), "bob": "plaintext"})


def test_handler_keeps_its_own_copy_of_the_users(users):
    handler = file_auth_handler(users)
    users["mallory"] = fast_hash("m-secret")
    del users["alice"]
    assert handler(PEER, "PLAIN", "mallory", "m-secret", None) is False
    assert handler(PEER, "PLAIN", "alice", "a-secret", None) is True


def test_handler_from_a_loaded_file(tmp_path):
    path = write(tmp_path, f"alice:{fast_hash('a-secret')}\n")
    handler = file_auth_handler(load_auth_file(path))
    assert handler(PEER, "LOGIN", "alice", "a-secret", None) is True
    assert handler(PEER, "LOGIN", "alice", "wrong", None) is False


# -- what guessing can make a server spend (a real --auth-file server) --------

def auth_plain(username, password):
    return "AUTH PLAIN " + b64(b"\0%s\0%s" % (username.encode(), password.encode()))


def start_auth_server(tmp_path, encoded, *options):
    path = write(tmp_path, "alice:%s\n" % encoded)
    return start_cli("--sink", "--auth-file", str(path), "--auth-allow-plaintext", *options)


def one_attempt(port, password="wrong", replies=None):
    """One session, one AUTH PLAIN for alice; its reply (appended to ``replies`` too)."""
    client = RawClient("127.0.0.1", port, timeout=60)
    try:
        client.reply()
        client.command("EHLO x")
        reply = client.command(auth_plain("alice", password))
    finally:
        client.close()
    if replies is not None:
        replies.append(reply)
    return reply


def in_parallel(count, function, *args):
    threads = [threading.Thread(target=function, args=args) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


@needs_scrypt
def test_simultaneous_wrong_attempts_keep_the_server_memory_bounded(tmp_path):
    # 40 sessions from one address: more than the per-address default allows.
    server, port = start_auth_server(tmp_path, hash_password("a-secret"),   # 16 MiB scrypt
                                     "--max-connections-per-ip", "0")
    try:
        one_attempt(port, "a-secret")       # warm up: one check's memory is expected
        before = int(proc_status(server.process.pid)["VmHWM"])     # peak RSS, KiB
        replies = []
        in_parallel(40, one_attempt, port, "wrong", replies)
        peak = int(proc_status(server.process.pid)["VmHWM"])
    finally:
        server.close()
    assert len(replies) == 40
    assert {reply[:3] for reply in replies} <= {"535", "454"}
    # 40 checks at once would take 640 MiB; two at a time take 32.
    assert peak - before < 100 * 1024, (before, peak)


def test_reconnecting_sessions_from_one_address_are_braked(tmp_path):
    server, port = start_auth_server(tmp_path, fast_hash("a-secret"))
    try:
        replies = []
        in_parallel(passwords.BRAKE_FAILURES, one_attempt, port, "wrong", replies)
        assert [reply[:3] for reply in replies] == ["535"] * passwords.BRAKE_FAILURES
        braked = [one_attempt(port, password) for password in ("wrong", "a-secret")]
    finally:
        server.close()
    # The right password is braked too: the brake tells nothing about the accounts.
    assert braked == ["454 4.7.0 Error: too many authentication failures from your "
                      "address, try later"] * 2


def test_brake_counts_an_ipv6_client_by_its_slash_64():
    limiter = passwords.CheckLimiter(failures=2)
    for address in ("2001:db8::1", "2001:db8::2"):
        assert limiter.check(address, lambda: False) is False
    with pytest.raises(SMTPError) as braked:
        limiter.check("2001:db8::ffff:1", lambda: True)
    assert braked.value.code == 454
    assert limiter.check("2001:db8:0:1::1", lambda: True) is True    # another /64
    assert limiter.check("192.0.2.1", lambda: True) is True


def test_brake_forgets_failures_with_time():
    limiter = passwords.CheckLimiter(failures=2, forget_seconds=0.2)
    for _ in range(2):
        limiter.check("192.0.2.1", lambda: False)
    with pytest.raises(SMTPError):
        limiter.check("192.0.2.1", lambda: True)
    time.sleep(0.3)
    assert limiter.check("192.0.2.1", lambda: True) is True


@needs_scrypt
def test_simultaneous_attempts_cannot_slip_past_the_brake(tmp_path):
    # 40 sessions guessing at the same moment all pass the brake before any
    # failure is counted; the ones waiting for a check slot must meet it.
    # (More sessions from one address than the per-address default allows.)
    server, port = start_auth_server(tmp_path, hash_password("a-secret"),
                                     "--max-connections-per-ip", "0")
    try:
        replies = []
        in_parallel(40, one_attempt, port, "wrong", replies)
    finally:
        server.close()
    assert len(replies) == 40
    checked = [reply for reply in replies if reply.startswith("535")]
    assert len(checked) <= passwords.BRAKE_FAILURES + passwords.MAX_CONCURRENT_CHECKS, replies
