"""Runs a command in a real pseudo-terminal (its stdout and stderr are the terminal, as for
a person typing it), and prints everything the terminal showed, then the exit status on the
last line.

Usage: python3 run_in_a_terminal.py COMMAND [ARG...]
"""
import os
import pty
import select
import sys
import time

argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)

shown = b""
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.05)
    if ready:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the command closed the terminal (it exited)
            break
        if not chunk:
            break
        shown += chunk
done, status = os.waitpid(pid, os.WNOHANG)
if done == 0:
    done, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode("utf-8", "replace"))
sys.stdout.write("\nexit %d\n" % os.waitstatus_to_exitcode(status))
