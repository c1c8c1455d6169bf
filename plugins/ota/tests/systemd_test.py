#!/usr/bin/env python3
"""ota_systemd_test: packaging/grove-ota.service and grove-ota-watchdog as its main process.

usage: systemd_test.py SOURCE_DIR BUILD_DIR GROVE_OTA WATCHDOG GROVED GROVECTL

The unit passes `systemd-analyze verify` (its paths pointed into a test tree; a broken
copy fails, so verify does look) and is installed by the ota plugin's install component.
There is no systemd as PID 1 here, so the test is the service manager: the watchdog runs
with NOTIFY_SOCKET naming this test's datagram socket (SO_PASSCRED: every message's
sender is known) and WATCHDOG_USEC, over an A/B root installed by grove-ota. READY=1
comes from the watchdog's pid once groved answers `grovectl status`; a message sent to
the relay by another process is not relayed; an update to a release whose groved exits at
start and one to a release whose groved hangs are both rolled back, with WATCHDOG=1
never apart by more than WATCHDOG_USEC (what systemd would kill the unit for), no
STOPPING=1 relayed from the groved an update stops, READY=1 again from the previous
release; SIGTERM gives STOPPING=1 and a clean exit.
"""

import array
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SRC, BUILD, OTA, WATCHDOG, GROVED, GROVECTL = (os.path.abspath(a) for a in sys.argv[1:7])
LIBDIR = os.path.join(os.path.dirname(os.path.dirname(GROVED)), "lib")
UNIT = os.path.join(SRC, "packaging", "grove-ota.service")
WATCHDOG_USEC = 4_000_000  # groved and the watchdog feed every 2 s


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


class Manager:
    """The service manager's end of the notify protocol: a datagram socket with
    SO_PASSCRED; every message is kept as (monotonic time, sender pid, text)."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages = []
        self.cv = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        creds_size = struct.calcsize("3i")
        while not self.stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds_size))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = 0
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", raw[:creds_size])[0]
            with self.cv:
                self.messages.append((time.monotonic(), pid, data.decode(errors="replace")))
                self.cv.notify_all()

    def wait_for(self, pred, timeout=60):
        """Waits for a message with pred(text); returns (time, pid, text) or None."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for m in self.messages:
                    if pred(m[2]):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def since(self, start):
        with self.cv:
            return [m for m in self.messages if m[0] >= start]

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def lines(text):
    return text.split("\n")


class SystemdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ota_systemd_test.")
        cls.root = os.path.join(cls.tmp, "root")
        cls.sock = os.path.join(cls.root, "var", "run", "control.sock")
        r = run([OTA, "keygen", os.path.join(cls.tmp, "k")])
        assert r.returncode == 0, r.stderr
        cls.key = os.path.join(cls.tmp, "k")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def make_bundle(self, version, groved_script=None):
        tree = os.path.join(self.tmp, "t" + version)
        for d in ("bin", "lib/grove/plugins", "etc/grove"):
            os.makedirs(os.path.join(tree, d), exist_ok=True)
        shutil.copy(GROVECTL, os.path.join(tree, "bin"))
        if groved_script:
            with open(os.path.join(tree, "bin", "groved"), "w") as f:
                f.write("#!/bin/sh\n" + groved_script + "\n")
            os.chmod(os.path.join(tree, "bin", "groved"), 0o755)
        else:
            shutil.copy(GROVED, os.path.join(tree, "bin"))
        shutil.copy(os.path.join(SRC, "tools", "grove-certs"), os.path.join(tree, "bin"))
        for lib in ("libgrove_core.so.0", "libgrove_proto.so"):
            shutil.copy(os.path.join(LIBDIR, lib), os.path.join(tree, "lib", lib))
        shutil.copy(os.path.join(LIBDIR, "grove/plugins/libheartbeat.so"),
                    os.path.join(tree, "lib/grove/plugins"))
        with open(os.path.join(tree, "etc/grove/profile.yaml"), "w") as f:
            f.write("kernel:\n  log_level: info\nplugins:\n  - name: heartbeat\n"
                    f"    config:\n      interval_ms: 100\n      topic: grove/hb/{version}\n")
        out = os.path.join(self.tmp, f"b{version}.tar")
        r = run([OTA, "bundle", "--tree", tree, "--version", version, "--key",
                 self.key + ".key", "--out", out])
        self.assertEqual(r.returncode, 0, r.stderr)
        return out

    def install(self, bundle, *extra):
        r = run([OTA, "install", bundle, "--root", self.root, "--trust", self.key + ".pub",
                 *extra])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def status(self):
        r = run([GROVECTL, "--socket", self.sock, "--json", "--timeout", "2", "status"])
        return json.loads(r.stdout) if r.returncode == 0 else None

    def beating(self):
        st = self.status()
        return st and st.get("details", {}).get("heartbeat.beating", "")

    def test_1_unit_verifies_and_is_installed_with_ota(self):
        with open(UNIT) as f:
            text = f.read()
        for want in ("Type=notify", "NotifyAccess=main", "WatchdogSec=",
                     "ExecStart=/usr/bin/grove-ota-watchdog --root /var/lib/grove-ota",
                     "Conflicts=grove.service"):
            self.assertIn(want, text)
        # Its paths pointed into a tree that has what it runs.
        units = os.path.join(self.tmp, "units")
        fake = os.path.join(self.tmp, "unit-root")
        os.makedirs(os.path.join(fake, "current", "bin"))
        shutil.copy(os.path.join(SRC, "tools", "grove-certs"), os.path.join(fake, "current", "bin"))
        os.makedirs(units)
        rewritten = (text.replace("/usr/bin/grove-ota-watchdog", WATCHDOG)
                     .replace("/var/lib/grove-ota/current/bin/", os.path.join(fake, "current/bin/")))
        good = os.path.join(units, "grove-ota.service")
        with open(good, "w") as f:
            f.write(rewritten)
        r = run(["systemd-analyze", "verify", good])
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        bad = os.path.join(units, "broken-ota.service")
        with open(bad, "w") as f:
            f.write(rewritten.replace("WatchdogSec=30", "WatchdogSec=thirty"))
        r = run(["systemd-analyze", "verify", bad])
        self.assertIn("Failed to parse sec value", r.stderr)  # verify does look
        # Installed by the ota plugin's component (extra), beside the watchdog.
        dest = os.path.join(self.tmp, "installed")
        r = run(["cmake", "--install", os.path.join(BUILD, "plugins", "ota"), "--component",
                 "extra", "--prefix", dest])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(dest, "lib/systemd/system/grove-ota.service")),
                        r.stdout)
        self.assertTrue(os.path.isfile(os.path.join(dest, "bin/grove-ota-watchdog")), r.stdout)

    def test_2_notify_relay_and_rollbacks(self):
        self.install(self.make_bundle("1.0.0"))
        bad_exit = self.make_bundle("1.1.0", "exit 3")
        bad_hang = self.make_bundle("1.2.0", "exec sleep 1000")
        mgr = Manager(os.path.join(self.tmp, "notify.sock"))
        self.addCleanup(mgr.close)
        env = dict(os.environ, NOTIFY_SOCKET=mgr.path, WATCHDOG_USEC=str(WATCHDOG_USEC))
        log = open(os.path.join(self.tmp, "watchdog.log"), "w")
        self.addCleanup(log.close)
        wd = subprocess.Popen(
            [WATCHDOG, "--root", self.root, "--socket", self.sock, "--health-seconds", "1",
             "--start-seconds", "6", "--", "-c", os.path.join(self.root, "current/etc/grove/profile.yaml"),
             "-p", os.path.join(self.root, "current/lib/grove/plugins"),
             "-w", os.path.join(self.root, "var")],
            env=env, stdout=log, stderr=subprocess.STDOUT)

        def kill_wd():
            if wd.poll() is None:
                children = run(["pgrep", "-P", str(wd.pid)]).stdout.split()
                wd.kill()
                for c in children:
                    try:
                        os.kill(int(c), 9)
                    except ProcessLookupError:
                        pass
                wd.wait()
        self.addCleanup(kill_wd)
        self.addCleanup(lambda: print(open(log.name).read()[-3000:]) if wd.returncode else None)

        ready = mgr.wait_for(lambda t: "READY=1" in lines(t))
        self.assertIsNotNone(ready, "no READY=1")
        # From the unit's main process, and groved answers by then.
        self.assertEqual(ready[1], wd.pid)
        self.assertTrue(self.beating().endswith("grove/hb/1.0.0"))
        groved_pid = int(run(["pgrep", "-P", str(wd.pid)]).stdout.split()[0])
        # groved's own feed reaches the manager through the relay.
        t0 = time.monotonic()
        while len([m for m in mgr.since(t0) if "WATCHDOG=1" in lines(m[2])]) < 2:
            self.assertLess(time.monotonic() - t0, 30, "no WATCHDOG=1 relayed")
            time.sleep(0.2)
        self.assertTrue(all(m[1] == wd.pid for m in mgr.since(0)),
                        "a message not from the main process")
        # Another process on the relay's socket is not relayed.
        forged = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        forged.sendto(b"STATUS=forged", b"\0grove-ota-watchdog-" + str(wd.pid).encode())
        forged.close()

        def update(bundle, version, reason):
            start = time.monotonic()
            self.install(bundle, "--restart-pid", str(groved_pid_now()))
            m = mgr.wait_for(lambda t: f"rolled back {version}" in t, timeout=90)
            self.assertIsNotNone(m, f"no rollback of {version} reported")
            self.assertIn(reason, m[2])
            # READY=1 again, from the previous release's groved, after the rollback.
            deadline = time.monotonic() + 60
            while not [x for x in mgr.since(m[0]) if "READY=1" in lines(x[2])]:
                self.assertLess(time.monotonic(), deadline, "no READY=1 after the rollback")
                time.sleep(0.1)
            self.assertTrue(self.beating().endswith("grove/hb/1.0.0"))
            with open(os.path.join(self.root, "ota-state.json")) as f:
                self.assertEqual(json.load(f)["phase"], "rolled_back")
            msgs = mgr.since(start)
            self.assertFalse([x for x in msgs if "STOPPING=1" in lines(x[2])])
            feeds = [x[0] for x in mgr.since(start - WATCHDOG_USEC / 1e6)
                     if "WATCHDOG=1" in lines(x[2])]
            gaps = [b - a for a, b in zip(feeds, feeds[1:])]
            self.assertTrue(gaps, "no WATCHDOG=1 during the update")
            self.assertLess(max(gaps), WATCHDOG_USEC / 1e6,
                            f"the watchdog feed stopped for {max(gaps):.2f} s during the update")

        def groved_pid_now():
            return int(run(["pgrep", "-P", str(wd.pid)]).stdout.split()[0])

        update(bad_exit, "1.1.0", "exited with code 3")
        self.assertNotEqual(groved_pid_now(), groved_pid)
        update(bad_hang, "1.2.0", "not healthy within")
        self.assertFalse([m for m in mgr.since(0) if "forged" in m[2]])
        self.assertTrue(all(m[1] == wd.pid for m in mgr.since(0)),
                        "a message not from the main process")

        stop = time.monotonic()
        wd.terminate()
        self.assertEqual(wd.wait(timeout=60), 0)
        self.assertTrue([m for m in mgr.since(stop) if "STOPPING=1" in lines(m[2])])


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
