"""Password hashes and the ``--auth-file`` of the command line.

An auth file holds one ``user:hash`` line per account; blank lines and lines
starting with ``#`` are ignored.  The user name is everything before the
first ``:`` (so it cannot contain one) and is compared exactly.  Hashes come
from ``python -m smtpd_lite --hash-password`` (``hash_password``)::

    scrypt$<N>$<r>$<p>$<salt>$<hash>            (hashlib.scrypt)
    pbkdf2_sha256$<iterations>$<salt>$<hash>    (where scrypt is missing)

salt and hash in standard base64.  Plain-text passwords are refused: the
file must be useless to whoever reads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from . import replies
from .auth import PLAINTEXT_MECHANISMS
from .callbacks import AuthHandler, Peer

logger = logging.getLogger("smtpd_lite")

# scrypt cost.  N=2**14, r=8, p=5 is one of OWASP's equivalent minimum
# settings (Password Storage Cheat Sheet): the CPU cost of N=2**17, p=1 but
# 16 MiB of memory per check instead of 128 MiB, which matters when many
# sessions authenticate at once.
SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 5
# PBKDF2-HMAC-SHA256 iterations: OWASP's 2023 recommendation.
PBKDF2_ITERATIONS = 600000

_SALT_OCTETS = 16
_HASH_OCTETS = 32
_MIN_HASH_OCTETS = 16
# Every login attempt, by anyone, pays for one check, so a hash costlier than
# this is refused when the auth file is loaded: ten times the defaults' work,
# and 256 MiB (OWASP's N=2**17, r=8, p=1 needs 128 MiB).
MAX_SCRYPT_WORK = 10 * SCRYPT_N * SCRYPT_R * SCRYPT_P
MAX_SCRYPT_MEMORY = 1 << 28
MAX_PBKDF2_ITERATIONS = 10 * PBKDF2_ITERATIONS

# What unauthenticated clients can make the server spend.  At most this many
# checks run at once in the process (each takes a core, and 16 MiB with the
# default scrypt cost); a check waits at most CHECK_WAIT seconds for its
# turn, then the client is told 454 4.7.0 and may try again.
MAX_CONCURRENT_CHECKS = 2
CHECK_WAIT = 5.0
# Failures from one client address (an IPv6 client's /64) before its next
# attempts get 454 4.7.0 without a check; one failure is forgotten every
# FAILURE_FORGET_SECONDS, so a braked address may guess about once a minute.
BRAKE_FAILURES = 10
FAILURE_FORGET_SECONDS = 60.0
_MAX_BRAKED_ADDRESSES = 10000

# Where the Python's OpenSSL lacks scrypt; tests patch this to None.
_scrypt: Callable[..., bytes] | None = getattr(hashlib, "scrypt", None)

_POSITIVE_INTEGER = re.compile(r"[1-9][0-9]{0,9}\Z")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


class HashCostError(ValueError):
    """A hash that is well formed but would cost too much to check at every login."""


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    if not text or not _BASE64.match(text):
        raise ValueError(f"{what} is not base64")
    return binascii.a2b_base64(text)


def _integer(text: str, what: str) -> int:
    if not _POSITIVE_INTEGER.match(text):
        raise ValueError(f"{what} is not a positive integer")
    return int(text)


def _scrypt_memory(n: int, r: int, p: int) -> int:
    # What OpenSSL's EVP_PBE_scrypt allocates: the V array plus p B blocks.
    return 128 * r * (n + 2 + p)


def _parse(encoded: str) -> tuple[Callable[[bytes], bytes], bytes]:
    """Check ``encoded`` and return (function of the password bytes, expected hash).

    Raises ValueError, without quoting ``encoded``, if it is not a hash this
    module makes or cannot be checked on this Python.
    """
    if not isinstance(encoded, str):
        raise TypeError("encoded hash must be str")
    scheme, _, rest = encoded.partition("$")
    fields = rest.split("$")
    if scheme == "scrypt" and len(fields) == 5:
        n, r, p = (_integer(field, "scrypt parameter") for field in fields[:3])
        salt = _b64decode(fields[3], "salt")
        expected = _b64decode(fields[4], "hash")
        if n & (n - 1) or n < 2:
            raise ValueError("scrypt N is not a power of two")
        memory = _scrypt_memory(n, r, p)
        if memory > MAX_SCRYPT_MEMORY:
            raise HashCostError("scrypt parameters need more than %d MiB per check"
                                % (MAX_SCRYPT_MEMORY >> 20))
        if n * r * p > MAX_SCRYPT_WORK:
            raise HashCostError("scrypt cost N*r*p above %d (ten times the default)"
                                % MAX_SCRYPT_WORK)
        if _scrypt is None:
            raise ValueError("this Python's hashlib has no scrypt")
        scrypt = _scrypt

        def derive(password: bytes) -> bytes:
            return scrypt(password, salt=salt, n=n, r=r, p=p,
                          maxmem=memory + 1024, dklen=len(expected))
    elif scheme == "pbkdf2_sha256" and len(fields) == 3:
        iterations = _integer(fields[0], "iterations")
        if iterations > MAX_PBKDF2_ITERATIONS:
            raise HashCostError("PBKDF2 iterations above %d (ten times the default)"
                                % MAX_PBKDF2_ITERATIONS)
        salt = _b64decode(fields[1], "salt")
        expected = _b64decode(fields[2], "hash")

        def derive(password: bytes) -> bytes:
            return hashlib.pbkdf2_hmac("sha256", password, salt, iterations,
                                       dklen=len(expected))
    else:
        raise ValueError("not a recognised password hash")
    if len(expected) < _MIN_HASH_OCTETS:
        raise ValueError(f"hash shorter than {_MIN_HASH_OCTETS} octets")
    return derive, expected


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Return the encoded hash of ``password`` for an auth file.

    scrypt with cost ``n``, ``r``, ``p``; where hashlib has no scrypt,
    PBKDF2-HMAC-SHA256 with ``iterations``.  The defaults are the sound
    ones; lower them only in tests.  An empty password, or one holding NUL,
    could never be sent with PLAIN or LOGIN and raises ValueError.
    """
    if not isinstance(password, str):
        raise TypeError("password must be str")
    if not password or "\x00" in password:
        raise ValueError("password is empty or contains NUL")
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("password is not valid Unicode text") from None
    salt = secrets.token_bytes(_SALT_OCTETS)
    if _scrypt is not None:
        digest = _scrypt(secret, salt=salt, n=n, r=r, p=p,
                         maxmem=_scrypt_memory(n, r, p) + 1024, dklen=_HASH_OCTETS)
        return f"scrypt${n}${r}${p}${_b64encode(salt)}${_b64encode(digest)}"
    digest = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations, dklen=_HASH_OCTETS)
    return f"pbkdf2_sha256${iterations}${_b64encode(salt)}${_b64encode(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches ``encoded`` (constant-time comparison).

    A wrong password gives False; an ``encoded`` this module cannot check
    raises ValueError.
    """
    derive, expected = _parse(encoded)
    # surrogatepass: text that is not valid Unicode cannot match, but must
    # not raise (or echo the password in an exception) either.
    secret = password.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(derive(secret), expected)


def load_auth_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read an auth file into ``{user: encoded hash}``.

    ValueError, naming the line number but never its content, for a line
    without ``:``, an empty user name or one with surrounding spaces, a hash
    that is not recognised (a plain-text password, for one), a duplicate
    user or bytes that are not UTF-8.
    """
    with open(path, "rb") as file:
        content = file.read()
    users: dict[str, str] = {}
    for number, raw_line in enumerate(content.splitlines(), 1):
        try:
            # utf-8-sig on line 1: some Windows editors start files with a BOM.
            line = raw_line.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            raise ValueError(f"{path} line {number}: not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        user, colon, encoded = line.partition(":")
        if not colon or not user:
            raise ValueError(f"{path} line {number}: expected user:hash")
        if user != user.strip():
            # "alice :hash" would define a user nobody can type.
            raise ValueError(f"{path} line {number}: space around the user name")
        try:
            _parse(encoded)
        except HashCostError as error:
            raise ValueError(f"{path} line {number}: {error}; make a new hash with "
                             "python -m smtpd_lite --hash-password") from None
        except ValueError as error:
            raise ValueError(
                f"{path} line {number}: {error} (expected a hash from python -m "
                "smtpd_lite --hash-password; plain-text passwords are refused)") from None
        if user in users:
            raise ValueError(f"{path} line {number}: duplicate user {user!r}")
        users[user] = encoded
    return users


def file_auth_handler(users: Mapping[str, str]) -> AuthHandler:
    """Return an ``auth_handler`` that checks PLAIN and LOGIN against ``users``.

    ``users`` maps user names to ``hash_password`` hashes, as
    ``load_auth_file`` returns them; every hash is checked now (ValueError),
    and later changes to the dict are not seen.  CRAM-MD5 always fails: it
    proves knowledge of the plain-text secret, which a one-way hash cannot
    reproduce, so do not offer it with an auth file.  An unknown user costs
    the same hash computation as a known one, so timing does not reveal which
    accounts exist.  What guessing can cost is bounded (:class:`CheckLimiter`):
    at most ``MAX_CONCURRENT_CHECKS`` checks at once, and an address with
    ``BRAKE_FAILURES`` recent failures gets ``454 4.7.0`` without a check.
    """
    accounts = dict(users)
    for encoded in accounts.values():
        _parse(encoded)
    decoy: str | None = next(iter(accounts.values()), None)
    limiter = CheckLimiter()

    def check(username: str, password: str) -> bool:
        encoded = accounts.get(username)
        if encoded is None:
            if decoy is not None:
                verify_password(password, decoy)
            return False
        return verify_password(password, encoded)

    def auth_handler(peer: Peer, mechanism: str, username: str, password: str | None,
                     shared: str | None) -> bool:
        if mechanism.upper() not in PLAINTEXT_MECHANISMS or password is None:
            return False
        return limiter.check(peer[0], lambda: check(username, password))

    return auth_handler


# One pool of check slots for the whole process: memory is the process's.
_check_slots = threading.BoundedSemaphore(MAX_CONCURRENT_CHECKS)
_check_executor: ThreadPoolExecutor | None = None
_check_executor_lock = threading.Lock()


def _check_threads() -> ThreadPoolExecutor:
    """The few threads every check runs on (started at the first one).

    Not the session's own thread: malloc gives threads arenas of their own
    and keeps what scrypt freed in each, so checks spread over a hundred
    session threads would keep many 16 MiB blocks resident for good.
    """
    global _check_executor
    with _check_executor_lock:
        if _check_executor is None:
            _check_executor = ThreadPoolExecutor(MAX_CONCURRENT_CHECKS,
                                                 thread_name_prefix="smtpd_lite password check")
        return _check_executor


class CheckLimiter:
    """Bounds the memory and CPU that password guessing can make the server spend.

    Two limits, both the same for every user name (known or not), so they
    reveal nothing about which accounts exist: a process-wide cap on checks
    running at once, and a brake per client address (an IPv6 client's /64)
    that survives reconnection: after ``failures`` recent failures, attempts
    get ``454 4.7.0`` at once, until one failure is forgotten every
    ``forget_seconds``.
    """

    def __init__(self, failures: int = BRAKE_FAILURES,
                 forget_seconds: float = FAILURE_FORGET_SECONDS) -> None:
        self.failures = failures
        self.forget_seconds = forget_seconds
        self._lock = threading.Lock()
        self._scores: dict[str, tuple[float, float]] = {}   # key: (failures, when)

    def check(self, address: str, verify: Callable[[], bool]) -> bool:
        """``verify()`` within the limits; SMTPError ``454 4.7.0`` outside them."""
        key = _brake_key(address)
        self._brake(key, address)
        if not _check_slots.acquire(timeout=CHECK_WAIT):
            logger.warning("%s: every password check slot busy; answering 454", address)
            raise _refusal(replies.AUTH_BUSY)
        try:
            # Again: attempts made at the same moment all passed the brake
            # above before any of them failed.
            self._brake(key, address)
            verified = _check_threads().submit(verify).result()
        finally:
            _check_slots.release()
        if not verified:
            self._failed(key)
        return verified

    def _brake(self, key: str, address: str) -> None:
        """SMTPError ``454 4.7.0`` if ``key`` has failed too often lately."""
        # "> failures - 1": the failures are forgotten continuously, a little
        # already by the time the last one is counted.
        if self._score(key, time.monotonic()) > self.failures - 1:
            logger.warning("%s: too many authentication failures; refusing for now", address)
            raise _refusal(replies.AUTH_BRAKED)

    def _score(self, key: str, now: float) -> float:
        """The failures still remembered for ``key`` (lock-free read of one entry)."""
        score, when = self._scores.get(key, (0.0, now))
        return max(score - (now - when) / self.forget_seconds, 0.0)

    def _failed(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            score = self._score(key, now) + 1
            self._scores.pop(key, None)         # re-inserted last: the dict stays in age order
            if len(self._scores) >= _MAX_BRAKED_ADDRESSES:
                del self._scores[next(iter(self._scores))]     # the longest quiet
            self._scores[key] = (score, now)


def _refusal(reply: str) -> replies.SMTPError:
    """``reply`` (code, enhanced code, text) as the SMTPError the session answers with."""
    code, enhanced, text = reply.split(" ", 2)
    return replies.SMTPError(int(code), text, enhanced)


def _brake_key(address: str) -> str:
    """The unit a client is braked by: its IPv4 address, or its IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:      # a Unix socket's peer, say
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
