"""Files that hold mail are private: created readable by their owner only.

Mail is personal data, so every file smtpd_lite creates to hold mail or
mail metadata is created ``0600`` and every folder ``0700``, whatever the
umask (as Postfix and :mod:`mailbox` do).  A file or folder that already
exists keeps its mode: an operator who made an mbox ``0640`` for a group of
readers keeps that choice.
"""

from __future__ import annotations

import os
import stat

OWNER_ONLY_FILE = 0o600
OWNER_ONLY_FOLDER = 0o700


def create_private(path: str, flags: int = os.O_RDWR) -> int:
    """Create the new file ``path`` (it must not exist) mode 0600; its descriptor."""
    descriptor = os.open(path, flags | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE)
    try:
        # The umask can only take bits away; fchmod makes the mode exact.
        os.fchmod(descriptor, OWNER_ONLY_FILE)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def open_private(path: str, flags: int = os.O_RDWR) -> int:
    """Open ``path`` with ``flags``, creating it mode 0600 if it is missing.

    An existing file is opened as it is, its mode untouched.  Call it before
    handing a path to code that creates the file itself (SQLite gives its
    journal and WAL files the mode of the database file).
    """
    flags &= ~(os.O_CREAT | os.O_EXCL)
    for _ in range(2):      # removed between the two calls: create it after all
        try:
            return create_private(path, flags)
        except FileExistsError:
            pass
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            continue
    raise FileNotFoundError("%s vanished while it was being opened" % path)


def make_private_folders(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, every folder it creates mode 0700.

    (``os.makedirs`` gives the folders above the last one the umask's mode.)
    """
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, OWNER_ONLY_FOLDER)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
            continue
        os.chmod(folder, OWNER_ONLY_FOLDER)


def readable_by_others(path: str) -> bool:
    """True if ``path`` exists and users outside its owner and group may read it."""
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False
