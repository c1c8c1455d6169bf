#!/usr/bin/env python3
"""package_test: the grove and grove-dev Debian packages, installed and run.

usage: package_test.py SOURCE_DIR BUILD_DIR

`cpack` in the build tree makes both packages into a temporary directory; their control
data (Depends, maintainer scripts, conffiles) and file lists are checked; `dpkg-deb -x`
unpacks them into a clean directory tree; groved from that tree runs the packaged
profile (its /etc and /usr paths pointed into the tree, a free broker port, a temporary
write dir) under a NOTIFY_SOCKET this test listens on: READY=1 arrives once every plugin
runs, WATCHDOG=1 keeps coming, STOPPING=1 on SIGTERM. The unit passes
`systemd-analyze verify` (which needs no systemd as PID 1: it reads unit files).
"""

import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_support import Groved, mapped_files, run, running_plugins  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from free_port import free_port  # noqa: E402  (tests/support)

SRC, BUILD = (os.path.abspath(a) for a in sys.argv[1:3])
TESTS = sys.argv[3:]  # optional test names
DEFAULT_PLUGINS = ["heartbeat", "message_manager", "function_runtime", "local_resources",
                   "shadow"]


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="package_test.")
        out = os.path.join(cls.tmp, "packages")
        r = run(["cpack", "--config", os.path.join(BUILD, "CPackConfig.cmake"), "-B", out],
                cwd=BUILD)
        if r.returncode != 0:
            raise AssertionError(f"cpack failed:\n{r.stdout}\n{r.stderr}")
        debs = glob.glob(os.path.join(out, "*.deb"))
        cls.deb = {os.path.basename(d).split("_")[0]: d for d in debs}
        cls.root = os.path.join(cls.tmp, "root")
        for d in debs:
            r = run(["dpkg-deb", "-x", d, cls.root])
            if r.returncode != 0:
                raise AssertionError(r.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def field(self, deb, name):
        r = run(["dpkg-deb", "-f", self.deb[deb], name])
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def files(self, deb):
        r = run(["dpkg-deb", "-c", self.deb[deb]])
        self.assertEqual(r.returncode, 0, r.stderr)
        return {line.split()[-1].lstrip(".") for line in r.stdout.splitlines()
                if not line.startswith("d")} | {
            line.split()[-3].lstrip(".") for line in r.stdout.splitlines() if " -> " in line}

    def test_configuration_is_readable_by_root_alone(self):
        # The group holds functions' environmentVariables, and sandboxed functions see /etc.
        r = run(["dpkg-deb", "-c", self.deb["grove"]])
        self.assertEqual(r.returncode, 0, r.stderr)
        modes = {line.split()[-1].lstrip("."): line.split()[0] for line in r.stdout.splitlines()}
        for f in ("/etc/grove/profile.yaml", "/etc/grove/group.yaml"):
            self.assertEqual(modes.get(f), "-rw-------", (f, modes.get(f)))

    def test_two_packages_with_their_control_data(self):
        self.assertEqual(sorted(self.deb), ["grove", "grove-dev"])
        depends = self.field("grove", "Depends")
        for dep in ("mosquitto", "openssl", "python3-yaml", "libsystemd0", "libcaf"):
            self.assertIn(dep, depends)
        self.assertIn("grove (= ", self.field("grove-dev", "Depends"))
        ctl = os.path.join(self.tmp, "control")
        r = run(["dpkg-deb", "-e", self.deb["grove"], ctl])
        self.assertEqual(r.returncode, 0, r.stderr)
        for script in ("postinst", "prerm", "postrm"):
            self.assertTrue(os.access(os.path.join(ctl, script), os.X_OK), script)
        with open(os.path.join(ctl, "postinst")) as f:
            postinst = f.read()
        self.assertIn("useradd --system", postinst)
        # The Python SDK's bytecode is made on the device and removed with the package.
        self.assertIn("py3compile -p grove /usr/lib/grove/python\n", postinst)
        with open(os.path.join(ctl, "prerm")) as f:
            self.assertIn("py3clean -p grove\n", f.read())
        with open(os.path.join(ctl, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/grove/profile.yaml", "/etc/grove/group.yaml"])

    def test_libarchive_opened_at_first_use_is_a_dependency(self):
        # libgrove_archive names libarchive's soname instead of linking it, so
        # dpkg-shlibdeps cannot see it: the package that provides that soname here must
        # be in Depends all the same.
        libs = glob.glob(os.path.join(self.root, "usr/lib/libgrove_archive.so.*"))
        self.assertTrue(libs, "no libgrove_archive in the grove package")
        r = run(["readelf", "-d", libs[0]])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("libarchive", r.stdout, "libarchive is linked after all")
        with open(libs[0], "rb") as f:
            names = set(re.findall(rb"libarchive\.so\.[0-9]+", f.read()))
        self.assertEqual(len(names), 1, names)
        soname = names.pop().decode()
        r = run(["ldconfig", "-p"])
        paths = [line.split(" => ")[-1] for line in r.stdout.splitlines()
                 if line.strip().startswith(soname + " ")]
        self.assertTrue(paths, f"{soname} is not installed here")
        r = run(["dpkg-query", "--search", os.path.realpath(paths[0])])
        self.assertEqual(r.returncode, 0, r.stderr)
        package = r.stdout.split(":")[0]
        entries = {d.strip().split(" ")[0]: d.strip() for d in
                   self.field("grove", "Depends").split(",")}
        self.assertIn(package, entries)
        # Versioned as dpkg-shlibdeps would: at least the version the build found, which
        # the installed one satisfies.
        m = re.fullmatch(re.escape(package) + r" \(>= ([^)]+)\)", entries[package])
        self.assertTrue(m, entries[package])
        r = run(["dpkg-query", "--show", "--showformat=${Version}", package])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run(["dpkg", "--compare-versions", r.stdout.strip(), "ge", m.group(1)])
        self.assertEqual(r.returncode, 0, f"installed {package} older than {m.group(1)}")

    def test_file_lists(self):
        grove = self.files("grove")
        for f in ("/usr/bin/groved", "/usr/bin/grovectl", "/usr/bin/grove-certs",
                  "/usr/lib/libgrove_core.so.0", "/usr/lib/libgrove_proto.so",
                  "/usr/lib/grove/broker/grove_broker_plugin.so",
                  "/usr/lib/grove/python/grove_function/runner.py",
                  "/etc/grove/profile.yaml", "/etc/grove/group.yaml",
                  "/usr/lib/systemd/system/grove.service"):
            self.assertIn(f, grove)
        plugins = sorted(os.path.basename(f) for f in grove if "/lib/grove/plugins/" in f)
        self.assertEqual(plugins, sorted(f"lib{n}.so" for n in DEFAULT_PLUGINS))
        self.assertFalse([f for f in grove if f.startswith("/usr/include")])
        # The Python SDK is its sources, nothing else of the build tree: no bytecode
        # (postinst makes it), no protoc module of older builds.
        sdk = "/usr/lib/grove/python/"
        src = os.path.join(os.path.dirname(__file__), "../../sdk/function/python")
        self.assertEqual(sorted(f[len(sdk):] for f in grove if f.startswith(sdk)),
                         sorted(os.path.relpath(os.path.join(d, n), src)
                                for pkg in ("grove_function", "greengrasssdk")
                                for d, _, names in os.walk(os.path.join(src, pkg))
                                for n in names if n.endswith(".py")))
        dev = self.files("grove-dev")
        for f in ("/usr/include/grove/plugin.hpp", "/usr/include/grove/abi.hpp",
                  "/usr/lib/cmake/Grove/GroveConfig.cmake", "/usr/lib/libgrove_core.so"):
            self.assertIn(f, dev)
        self.assertFalse(grove & dev, "a file in both packages")

    def test_unit_verifies(self):
        unit = os.path.join(self.root, "usr/lib/systemd/system/grove.service")
        with open(unit) as f:
            text = f.read()
        # Delegate=yes: groved changes its own cgroup tree on v2 (cgroup_v2_vm_test).
        for line in ("Type=notify", "WatchdogSec=30", "User=grove", "StateDirectory=grove",
                     "Delegate=yes",
                     "ExecStart=/usr/bin/groved --config /etc/grove/profile.yaml "
                     "--write-dir /var/lib/grove"):
            self.assertIn(line, text)
        # verify checks that ExecStart's programs exist: point them into the unpacked tree.
        d = os.path.join(self.tmp, "units")
        os.makedirs(d, exist_ok=True)
        good = os.path.join(d, "grove.service")
        with open(good, "w") as f:
            f.write(text.replace("/usr/bin/", os.path.join(self.root, "usr/bin/")))
        r = run(["systemd-analyze", "verify", good])
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        bad = os.path.join(d, "broken.service")
        with open(bad, "w") as f:
            f.write(text.replace("/usr/bin/", os.path.join(self.root, "usr/bin/"))
                    .replace("Type=notify", "Type=notified"))
        r = run(["systemd-analyze", "verify", bad])
        self.assertIn("Failed to parse service type", r.stderr)  # verify does look

    def test_installed_groved_runs_and_notifies(self):
        etc = os.path.join(self.root, "etc/grove")
        with open(os.path.join(etc, "profile.yaml")) as f:
            prof = yaml.safe_load(f)
        self.assertEqual(prof["kernel"]["group"], "/etc/grove/group.yaml")
        prof["kernel"]["group"] = os.path.join(etc, "group.yaml")
        for p in prof["plugins"]:
            if p["name"] == "message_manager":
                p["config"]["broker"]["port"] = free_port()
            if p["name"] == "function_runtime":
                self.assertEqual(p["config"]["python_sdk_dir"], "/usr/lib/grove/python")
                p["config"]["python_sdk_dir"] = os.path.join(self.root, "usr/lib/grove/python")
        work = os.path.join(self.tmp, "run")
        os.makedirs(work)
        profile = os.path.join(work, "profile.yaml")
        with open(profile, "w") as f:
            yaml.safe_dump(prof, f)
        write_dir = os.path.join(work, "var")
        bindir = os.path.join(self.root, "usr/bin")
        r = run([os.path.join(bindir, "grove-certs"), "ensure-default",
                 os.path.join(write_dir, "plugins/message_manager/pki"),
                 "--ca-dir", os.path.join(work, "ca"), "--config", profile])
        self.assertEqual(r.returncode, 0, r.stderr)

        notify_path = os.path.join(work, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify_path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
        env.update(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1000000")
        g = Groved(os.path.join(bindir, "groved"), profile, write_dir, work, env=env)
        messages = []

        def receive_until(pred, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    data = sock.recv(4096).decode()
                except socket.timeout:
                    break
                messages.append(data)
                if pred(data):
                    return data
            raise AssertionError(f"no such notification in {timeout} s; got {messages}\n"
                                 + g.logs())

        try:
            ready = receive_until(lambda m: "READY=1" in m, 60)
            self.assertIn("STATUS=5 of 5 plugins running", ready)
            # READY=1 came after every plugin started: they all run now.
            status = g.wait_ready(os.path.join(bindir, "grovectl"))
            self.assertEqual(sorted(running_plugins(status)), sorted(DEFAULT_PLUGINS))
            self.assertEqual(set(running_plugins(status).values()), {"running"})
            for m in mapped_files(g.proc.pid):
                if "libgrove_" in m or "/grove/plugins/" in m:
                    self.assertTrue(m.startswith(self.root), m)
            self.assertTrue(any("libsystemd.so" in m for m in mapped_files(g.proc.pid)))
            # groved's children (the broker, functions) do not inherit NOTIFY_SOCKET.
            children = []
            deadline = time.monotonic() + 30
            while not children and time.monotonic() < deadline:
                for task in os.listdir(f"/proc/{g.proc.pid}/task"):
                    try:
                        with open(f"/proc/{g.proc.pid}/task/{task}/children") as f:
                            children += f.read().split()
                    except FileNotFoundError:  # the thread ended meanwhile
                        pass
                time.sleep(0.1)
            self.assertTrue(children, "the broker runs as a child of groved\n" + g.logs())
            for c in children:
                with open(f"/proc/{c}/environ", "rb") as f:
                    env_vars = f.read().split(b"\0")
                self.assertFalse([v for v in env_vars if v.startswith(b"NOTIFY_SOCKET=")
                                  or v.startswith(b"WATCHDOG_")], c)
            for _ in range(3):  # fed every 0.5 s; three in a row
                receive_until(lambda m: m == "WATCHDOG=1", 30)
            self.assertIn("systemd watchdog: fed every 500 ms", g.logs())
            g.proc.send_signal(15)
            receive_until(lambda m: m == "STOPPING=1", 30)
        finally:
            rc = g.stop()
            sock.close()
        self.assertEqual(rc, 0, g.logs())

    def test_watchdog_feed_stops_while_the_workers_are_wedged(self):
        # One CAF worker, held by a test plugin's init (it waits at a gate, given up after
        # init_timeout_ms): the ping job cannot run, so after READY=1 at most the one feed
        # sent before the first ping; once the gate opens the worker is free and the feed
        # resumes.
        work = os.path.join(self.tmp, "wedged")
        os.makedirs(work)
        gate = os.path.join(work, "gate")
        profile = os.path.join(work, "p.yaml")
        with open(profile, "w") as f:
            yaml.safe_dump({"kernel": {"worker_threads": 1, "init_timeout_ms": 300},
                            "plugins": [{"name": "echo", "config": {"init_gate": gate}}]}, f)
        notify_path = os.path.join(work, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify_path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
        env.update(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="200000")  # fed every 100 ms
        bindir = os.path.join(self.root, "usr/bin")
        g = Groved(os.path.join(bindir, "groved"), profile, os.path.join(work, "var"), work,
                   env=env, args=["--plugin-dir", os.path.join(BUILD, "test-plugins")])

        def messages_for(seconds):
            got, deadline = [], time.monotonic() + seconds
            while time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    got.append(sock.recv(4096).decode())
                except socket.timeout:
                    break
            return got

        try:
            got = []
            deadline = time.monotonic() + 60
            while not any(m.startswith("READY=1") for m in got) and time.monotonic() < deadline:
                got += messages_for(1)
            self.assertTrue(any(m.startswith("READY=1\nSTATUS=0 of 1") for m in got),
                            (got, g.logs()))
            with open(gate + ".waiting") as f:
                self.assertIn("waiting", f.read())  # the worker is held
            got += messages_for(2)  # twenty periods
            self.assertLessEqual(got.count("WATCHDOG=1"), 1, (got, g.logs()))
            open(gate, "w").close()
            after = []
            deadline = time.monotonic() + 30
            while after.count("WATCHDOG=1") < 2 and time.monotonic() < deadline:
                after += messages_for(1)
            self.assertGreaterEqual(after.count("WATCHDOG=1"), 2, (after, g.logs()))
        finally:
            open(gate, "w").close()
            rc = g.stop()
            sock.close()
        self.assertEqual(rc, 0, g.logs())

    def test_dev_package_builds_a_plugin(self):
        # grove-dev is the SDK: the heartbeat example builds out of tree against the
        # unpacked packages alone (find_package(Grove)) and the packaged groved runs it.
        work = os.path.join(self.tmp, "dev")
        hb = os.path.join(work, "hb")
        r = run(["cmake", "-S", os.path.join(SRC, "sdk/examples/heartbeat"), "-B", hb,
                 "-DCMAKE_PREFIX_PATH=" + os.path.join(self.root, "usr"),
                 "-DCMAKE_BUILD_TYPE=Release"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(hb, "CMakeCache.txt")) as f:
            self.assertIn(os.path.join(self.root, "usr/lib/cmake/Grove"), f.read())
        r = run(["cmake", "--build", hb, "-j2"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        built = glob.glob(os.path.join(hb, "**/libheartbeat.so"), recursive=True)
        self.assertEqual(len(built), 1)
        profile = os.path.join(work, "p.yaml")
        with open(profile, "w") as f:
            yaml.safe_dump({"plugins": [{"name": "heartbeat"}]}, f)
        bindir = os.path.join(self.root, "usr/bin")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
        g = Groved(os.path.join(bindir, "groved"), profile, os.path.join(work, "var"), work,
                   env=env, args=["--plugin-dir", os.path.dirname(built[0])])
        try:
            status = g.wait_ready(os.path.join(bindir, "grovectl"))
            self.assertEqual(running_plugins(status), {"heartbeat": "running"}, g.logs())
            self.assertEqual(status["plugins"][0]["library"], built[0])
        finally:
            self.assertEqual(g.stop(), 0, g.logs())

    def test_without_notify_socket_no_libsystemd(self):
        # Outside systemd groved maps no libsystemd (it is dlopen()ed only under it).
        work = os.path.join(self.tmp, "plain")
        os.makedirs(work)
        profile = os.path.join(work, "p.yaml")
        with open(profile, "w") as f:
            yaml.safe_dump({"plugins": [{"name": "heartbeat"}]}, f)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("GROVE_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        bindir = os.path.join(self.root, "usr/bin")
        g = Groved(os.path.join(bindir, "groved"), profile, os.path.join(work, "var"), work,
                   env=env)
        try:
            status = g.wait_ready(os.path.join(bindir, "grovectl"))
            self.assertEqual(list(running_plugins(status)), ["heartbeat"])
            self.assertFalse([m for m in mapped_files(g.proc.pid) if "libsystemd" in m])
        finally:
            self.assertEqual(g.stop(), 0, g.logs())


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v", *TESTS])
