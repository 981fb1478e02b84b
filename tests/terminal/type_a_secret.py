"""Runs a command in a real pseudo-terminal (its controlling terminal), waits for its
prompt, types a secret and Enter (then Ctrl-D, for a command that reads to the end), and
prints everything the terminal showed, then the exit status on the last line.

It types as a person would: once the prompt is shown and the command has had its moment
to turn the terminal's echo off (it waits up to 2 s for that, then types anyway, so a
command that never turns echo off shows the secret).

Usage: python3 type_a_secret.py SECRET PROMPT-MARKER COMMAND [ARG...]
"""
import os
import pty
import select
import sys
import termios
import time

secret, marker, argv = sys.argv[1], sys.argv[2].encode(), sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)

shown = b""
typed = False
prompted_at = None
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
    if not typed and marker in shown:
        prompted_at = prompted_at or time.monotonic()
        echo_off = not termios.tcgetattr(fd)[3] & termios.ECHO
        if not echo_off and time.monotonic() - prompted_at < 2:
            continue
        os.write(fd, secret.encode() + b"\r")
        os.write(fd, b"\x04")
        typed = True
done, status = os.waitpid(pid, os.WNOHANG)
if done == 0:  # still waiting for something never typed: a failure, not a hang
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode("utf-8", "replace"))
sys.stdout.write("\nexit %d\n" % os.waitstatus_to_exitcode(status))
