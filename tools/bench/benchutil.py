"""Helpers shared by the Python benchmarks: reading a child's output with a deadline
and stopping it cleanly."""

import os
import select
import signal
import subprocess
import time


class line_reader:
    """Reads lines from a pipe with a deadline. select() on the raw descriptor plus
    os.read, because a buffered readline() may hold lines select() cannot see."""

    def __init__(self, f):
        self.fd = f.fileno()
        self.buf = b""

    def readline(self, deadline):
        """The next line (bytes); b"" at EOF; None on timeout."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"


def stop(proc):
    """SIGINT, then SIGKILL if it does not exit within 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
