"""The process a `headroom probe` watches in the fleet end-to-end test.

fleet_target.py EXTRA: listens on 127.0.0.1:0 (backlog 8) and prints
"PID PORT". On the first stdin line it connects to itself 3 times, accepts
and closes those (TCP transitions on its port). On that and every further
line it opens sockets until socket() fails with EMFILE, EXTRA more times,
closes them again (so it keeps its headroom and holds no connection, with
its fd errors on record), and prints the number of EMFILE failures. Exits
when stdin closes.
"""
import errno
import os
import socket
import sys

extra = int(sys.argv[1])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(8)
print(os.getpid(), srv.getsockname()[1], flush=True)

first = True
for _line in sys.stdin:
    if first:
        first = False
        pairs = []
        for _ in range(3):
            c = socket.create_connection(srv.getsockname())
            a, _ = srv.accept()
            pairs.append((c, a))
        for c, a in pairs:
            c.close()
            a.close()
    held, failures = [], 0
    while failures <= extra:
        try:
            held.append(socket.socket())
        except OSError as e:
            if e.errno != errno.EMFILE:
                raise
            failures += 1
    for s in held:
        s.close()
    print(failures, flush=True)
