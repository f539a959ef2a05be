"""Send one message to the server of serve.py, with smtplib."""

import smtplib
from email.message import EmailMessage

message = EmailMessage()
message["From"] = "alice@example.org"
message["To"] = "bob@example.org"
message["Subject"] = "Hello"
message.set_content("It works.\n")

with smtplib.SMTP("127.0.0.1", 2525) as client:
    client.send_message(message)
