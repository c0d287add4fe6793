"""A process for `headroom status` integration tests to look at.

    status_helper.py listen --backlog N [--port P] [--reuseport]
        listens on 127.0.0.1:P (0: any) with backlog N and never accepts.
    status_helper.py hold --connect PORT --count N [--files K]
        opens K /dev/null fds and N connections to 127.0.0.1:PORT.

Then it prints one JSON line {"pid", "port", "fds"} (fds: its open fd count)
and waits until stdin closes, so it dies with the test that started it.
"""

import argparse
import json
import os
import socket
import sys


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("listen")
    lp.add_argument("--backlog", type=int, required=True)
    lp.add_argument("--port", type=int, default=0)
    lp.add_argument("--reuseport", action="store_true")
    hp = sub.add_parser("hold")
    hp.add_argument("--connect", type=int, required=True)
    hp.add_argument("--count", type=int, required=True)
    hp.add_argument("--files", type=int, default=0)
    a = p.parse_args()

    keep = []
    port = 0
    if a.cmd == "listen":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if a.reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", a.port))
        s.listen(a.backlog)
        port = s.getsockname()[1]
        keep.append(s)
    else:
        keep += [open(os.devnull) for _ in range(a.files)]
        keep += [socket.create_connection(("127.0.0.1", a.connect)) for _ in range(a.count)]
        port = a.connect
    # listdir holds one fd of its own while it reads the directory.
    fds = len(os.listdir("/proc/self/fd")) - 1
    print(json.dumps({"pid": os.getpid(), "port": port, "fds": fds}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
