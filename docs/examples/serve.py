"""The smallest useful server: print a line for every message received.

Run it, then send it a message with send.py.  Stop it with Ctrl-C.
"""

import smtpd_lite


def handler(peer, mailfrom, rcpttos, data):
    # data is the whole message as bytes.  Store it somewhere safe here;
    # returning None tells the client the message is accepted.
    print("Message from", mailfrom or "<>", "to", rcpttos,
          len(data), "bytes", flush=True)


smtpd_lite.serve("127.0.0.1:2525", handler,
                 appname="MyServerApp", hostname="")
