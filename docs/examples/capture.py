"""Testing code that sends mail: capture() records what it receives."""

import smtplib

from smtpd_lite.testing import capture


def send_welcome(smtp_host, smtp_port, address):
    """The application code under test."""
    with smtplib.SMTP(smtp_host, smtp_port) as client:
        client.sendmail("noreply@example.org", [address],
                        "Subject: Welcome!\r\n\r\n"
                        "Thanks for signing up.\r\n")


def test_welcome_mail():
    with capture() as mail:
        send_welcome(mail.host, mail.port, "new.user@example.org")
        (message,) = mail.wait_for(1)
    assert message.mailfrom == "noreply@example.org"
    assert message.rcpttos == ["new.user@example.org"]
    assert message.message["Subject"] == "Welcome!"
    assert "Thanks for signing up." in message.message.get_content()


if __name__ == "__main__":
    test_welcome_mail()
    print("capture.py: ok")
