"""Opens sockets until socket() fails with EMFILE, then tries EXTRA more times.
emfile.py EXTRA [release]: with `release`, closes the sockets again before
reporting, so only an fd peak tracker can know the table was full.

Prints its pid, waits for a line on stdin, does the work, prints the number
of EMFILE failures it saw, and exits when stdin closes (so a probe can still
read it).
"""
import errno
import os
import socket
import sys

extra = int(sys.argv[1])
print(os.getpid(), flush=True)
sys.stdin.readline()
held, failures = [], 0
while True:
    try:
        held.append(socket.socket())
    except OSError as e:
        if e.errno != errno.EMFILE:
            raise
        failures += 1
        if failures == extra + 1:
            break
if len(sys.argv) > 2 and sys.argv[2] == "release":
    opened = len(held)
    for s in held:
        s.close()
    held = []
    # The peak: what is open now (minus listdir's own fd) plus what was closed.
    peak = len(os.listdir("/proc/self/fd")) - 1 + opened
    print(failures, peak, flush=True)
else:
    # Count what is held: free one slot for listdir's own fd, then refill it.
    held.pop().close()
    total = len(os.listdir("/proc/self/fd"))
    held.append(socket.socket())
    print(failures, total, flush=True)
sys.stdin.read()
