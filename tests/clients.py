"""Test support: the real mail client programs of the interoperability suite.

swaks, curl and msmtp are the Debian packages of the same names; a test that
needs one skips (with the package name) when it is not installed here, and
.ci/run installs them all so that nothing skips in CI.

Postfix's ``smtp-source`` ships in Debian's ``postfix`` package, whose
installation would configure and start an MTA.  So the package is only
downloaded (``apt-get download postfix``, no root needed) and unpacked with
``dpkg -x`` into pytest's cache directory, once; its daemons are never run.
``smtp-source`` links against Postfix's private libraries, found through
``LD_LIBRARY_PATH``.  An ``smtp-source`` already on the system is used first.
"""

import glob
import os
import shutil
import subprocess

# Long enough for a slow CI machine, short enough that a hung client (one
# waiting for a reply that never comes) fails the test instead of the run.
CLIENT_TIMEOUT = 60


def program(name):
    """The path of an installed program, or None."""
    return shutil.which(name)


def not_installed(name, package=None):
    return "%s is not installed (Debian package %s; .ci/run installs it)" % (
        name, package or name)


class Result:
    """A finished client: its exit status and its output (stdout, then stderr), as text."""

    def __init__(self, argv, completed):
        self.argv = argv
        self.returncode = completed.returncode
        self.stdout = completed.stdout.decode("utf-8", "replace")
        self.stderr = completed.stderr.decode("utf-8", "replace")
        self.output = self.stdout + self.stderr

    def __repr__(self):
        # What pytest shows when an assertion on a result fails.
        return "<%s exited %d>\n%s" % (" ".join(self.argv), self.returncode, self.output)


def run(argv, stdin=b"", env=None, cwd=None, timeout=CLIENT_TIMEOUT):
    """Run a client to completion; ``stdin`` is bytes (empty by default, never a terminal)."""
    argv = [str(argument) for argument in argv]
    completed = subprocess.run(argv, input=stdin, capture_output=True, env=env, cwd=cwd,
                               timeout=timeout)
    return Result(argv, completed)


class Unavailable(Exception):
    """A program cannot be found or fetched here; the message says why."""


class SmtpSource:
    """Postfix's smtp-source: ``run(*arguments)`` → :class:`Result`."""

    def __init__(self, path, library_directory=None):
        self.path = path
        self.env = dict(os.environ)
        if library_directory:
            self.env["LD_LIBRARY_PATH"] = os.pathsep.join(
                filter(None, [library_directory, os.environ.get("LD_LIBRARY_PATH")]))

    def run(self, *arguments, timeout=CLIENT_TIMEOUT):
        return run([self.path, *arguments], env=self.env, timeout=timeout)

    def works(self):
        # Without arguments smtp-source exits with its usage line (and status 1).
        try:
            result = self.run(timeout=10)
        except OSError:
            return False
        return "usage" in result.output


def smtp_source(cache_directory):
    """smtp-source from the system, else from Debian's postfix package unpacked in
    ``cache_directory`` (downloaded on first use).  Raises :class:`Unavailable`."""
    installed = program("smtp-source") or _executable("/usr/sbin/smtp-source")
    if installed:
        return SmtpSource(installed)
    root = os.path.join(cache_directory, "root")
    unpacked = SmtpSource(os.path.join(root, "usr", "sbin", "smtp-source"),
                          os.path.join(root, "usr", "lib", "postfix"))
    if not _executable(unpacked.path):
        _unpack_postfix(cache_directory, root)
    if not unpacked.works():
        raise Unavailable("smtp-source unpacked in %s does not run" % root)
    return unpacked


#: Set to 1 to keep the tests off the network: smtp-source is then used
#: only if it is installed, and its tests skip otherwise.
NO_NETWORK = "SMTPD_LITE_TESTS_OFFLINE"


def _unpack_postfix(cache_directory, root):
    if os.environ.get(NO_NETWORK, "") not in ("", "0"):
        raise Unavailable("smtp-source is not installed, and %s is set: not downloading "
                          "Debian's postfix package" % NO_NETWORK)
    if not (program("apt-get") and program("dpkg")):
        raise Unavailable("smtp-source is not installed and there is no apt-get/dpkg to "
                          "fetch Debian's postfix package")
    # A private directory per process, renamed into place: two test runs
    # sharing the cache never see a half-unpacked tree.
    work = os.path.join(cache_directory, "download-%d" % os.getpid())
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        download = run(["apt-get", "download", "postfix"], env=_c_locale(), cwd=work,
                       timeout=300)
        packages = glob.glob(os.path.join(work, "postfix_*.deb"))
        if download.returncode != 0 or not packages:
            raise Unavailable("smtp-source is not installed and `apt-get download postfix` "
                              "failed (run apt-get update?): " + _last_line(download.output))
        unpack = run(["dpkg", "-x", packages[0], os.path.join(work, "root")], timeout=300)
        if unpack.returncode != 0:
            raise Unavailable("dpkg -x of %s failed: %s"
                              % (packages[0], _last_line(unpack.output)))
        try:
            os.rename(os.path.join(work, "root"), root)
        except OSError:
            if not os.path.isdir(root):     # else another run unpacked it first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _c_locale():
    return dict(os.environ, LC_ALL="C")


def _executable(path):
    return path if os.access(path, os.X_OK) else None


def _last_line(text):
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"
