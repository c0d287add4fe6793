"""A TCP listener for the probe tests, driven line by line on stdin.

listener.py BACKLOG [accept]: binds 127.0.0.1:0, listens with BACKLOG, prints
the port. Then each stdin line is a command:
  connect N       open N connections (non-blocking: SYNs beyond the queue are
                  dropped by the kernel and retried), print "done"
  churn N K       (needs `accept`) open N connections, accept them, close K
                  of them server side first so the server's end goes to
                  TIME_WAIT, print "done"
It never accepts unless started with `accept`.
"""
import socket
import sys

backlog = int(sys.argv[1])
accepting = len(sys.argv) > 2 and sys.argv[2] == "accept"
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(backlog)
port = srv.getsockname()[1]
print(port, flush=True)
held = []
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "connect":
        for _ in range(int(cmd[1])):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            held.append(c)
    elif cmd[0] == "churn":
        n, k = int(cmd[1]), int(cmd[2])
        pairs = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port))
            a, _ = srv.accept()
            pairs.append((c, a))
        for c, a in pairs[:k]:
            a.close()  # active close on the server side: its end ends in TIME_WAIT
        for c, a in pairs[:k]:
            c.recv(1)  # the FIN
            c.close()
        # Wait for the last ACKs so the server ends are in TIME_WAIT, not FIN_WAIT2.
        import time
        time.sleep(0.2)
        held.extend(pairs[k:])
    print("done", flush=True)
