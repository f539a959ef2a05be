"""The recipes of docs/testing.rst, against the real libraries (skipped where missing)."""

import subprocess
import sys

import pytest
from processes import environment

DJANGO_PROJECT = '''
import django
from django.conf import settings

settings.configure(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
django.setup()

from django.core.mail import send_mail
from django.test import override_settings

from smtpd_lite.testing import capture

with capture() as smtpd_lite:
    with override_settings(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=smtpd_lite.host, EMAIL_PORT=smtpd_lite.port):
        send_mail("Thanks", "We got your message: https://example.com/t/1",
                  "site@example.com", ["visitor@example.com"])
    (message,) = smtpd_lite.wait_for(to="visitor@example.com")
print(message.subject, message.mailfrom, message.links)
'''


def test_the_django_recipe():
    pytest.importorskip("django", reason="Django is not installed (the test extra has it)")
    result = subprocess.run([sys.executable, "-c", DJANGO_PROJECT], capture_output=True,
                            text=True, env=environment(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "Thanks site@example.com ['https://example.com/t/1']"
