"""A plain TCP service for the subscription tests: accepts and holds every
connection, with a low RLIMIT_NOFILE so that its binding limit is near.

Usage: hold_listener.py NOFILE
Sets RLIMIT_NOFILE (soft and hard) to NOFILE, listens on 127.0.0.1:0, prints
the port, accepts (and keeps) connections until stdin closes.
"""
import resource
import socket
import sys
import threading

n = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1024)
print(srv.getsockname()[1], flush=True)
held = []


def accept():
    while True:
        try:
            c, _ = srv.accept()
        except OSError:
            return
        held.append(c)


threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
