"""Shared by the image and package tests: run groved from an installed tree, ask grovectl."""

import json
import os
import signal
import subprocess
import time


def run(cmd, **kw):
    """Runs cmd; returns the CompletedProcess (text), never raises on exit codes."""
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


class Groved:
    """groved started from `groved` with `profile`, write dir `write_dir`, cwd `cwd`."""

    def __init__(self, groved, profile, write_dir, cwd, env=None, args=()):
        self.log_path = os.path.join(cwd, "groved.log")
        self.log = open(self.log_path, "w")
        self.socket = os.path.join(write_dir, "run", "control.sock")
        self.proc = subprocess.Popen([groved, "--config", profile, "--write-dir", write_dir,
                                      *args],
                                     cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)

    def wait_ready(self, grovectl, timeout=60):
        """Waits until `grovectl status` answers; returns its JSON."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"groved exited {self.proc.returncode}:\n{self.logs()}")
            # The socket answers before the plugins load: "ready:" follows them.
            if "] ready: " in self.logs():
                r = run([grovectl, "--socket", self.socket, "--json", "status"])
                if r.returncode == 0:
                    return json.loads(r.stdout)
            time.sleep(0.1)
        raise AssertionError(f"groved not answering after {timeout} s:\n{self.logs()}")

    def logs(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def running_plugins(status):
    """{name: state} from `grovectl --json status`."""
    return {p["name"]: p["state"] for p in status.get("plugins", [])}


def mapped_files(pid):
    """Paths of the files process `pid` maps (to see which tree its libraries came from)."""
    paths = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/"):
                paths.add(parts[5])
    return paths
