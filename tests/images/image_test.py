#!/usr/bin/env python3
"""image_test: tools/grove-image builds trees that run on their own.

usage: image_test.py SOURCE_DIR BUILD_DIR

Builds configs/images/minimal.yaml and default.yaml into temporary trees, checks their
contents (exactly the profile's plugins and their files, the rewritten profile, the size
report, the build components' log), starts groved from each tree (not the build tree:
working directory elsewhere, libraries mapped from the tree) and checks that
`grovectl status` lists exactly the profile's plugins, running; against the default tree it
runs the README quick start's mosquitto_sub/mosquitto_pub commands as written there (the
lamp hears the switch through the brain function). Then the refusals: a
plugin that was not built, a failing build component (its output in the error), and
the .tar.gz form.
"""

import json
import os
import shutil
import shlex
import subprocess
import sys
import tarfile
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
TOOL = os.path.join(SRC, "tools", "grove-image")


def readme_device_commands():
    """{program: argv} of the mosquitto_pub / mosquitto_sub commands in the README's
    quick start (continuation lines joined, a trailing & dropped)."""
    with open(os.path.join(SRC, "README.md")) as f:
        text = f.read()
    quick = text[text.index("## Quick start"):text.index("\n## ", text.index("## Quick start") + 1)]
    cmds = {}
    for line in quick.replace("\\\n", " ").splitlines():
        if line.startswith(("mosquitto_pub ", "mosquitto_sub ")):
            argv = shlex.split(line, comments=True)
            cmds[argv[0]] = [a for a in argv if a != "&"]
    return cmds


def grove_image(*args, cwd=None):
    return run([sys.executable, TOOL, *args, "--build-dir", BUILD] if args[0] == "build"
               else [sys.executable, TOOL, *args], cwd=cwd or SRC)


class ImageTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="image_test.")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def build_tree(self, profile, name):
        out = os.path.join(self.tmp, name)
        r = grove_image("build", profile, "--out", out)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return out, r

    def run_tree(self, tree, expected, idle_lines=(), while_running=None):
        """Starts groved from `tree` (broker on a free port) and checks its plugins; then
        waits (at most 20 s) for each of `idle_lines` in its log."""
        prof_path = os.path.join(tree, "etc/grove/profile.yaml")
        with open(prof_path) as f:
            prof = yaml.safe_load(f)
        port = None
        for p in prof["plugins"]:
            if p["name"] == "message_manager":
                port = p["config"]["broker"]["port"] = free_port()  # 8883 may be taken here
            if p["name"] == "deployment":
                p["config"]["api"]["port"] = free_port()
            if p["name"] == "console":
                p["config"]["port"] = free_port()
        with open(prof_path, "w") as f:
            yaml.safe_dump(prof, f)
        work = os.path.join(self.tmp, "cwd-" + os.path.basename(tree))
        os.makedirs(work)
        write_dir = os.path.join(work, "var")
        if "message_manager" in expected:
            r = run([os.path.join(tree, "bin/grove-certs"), "ensure-default",
                     os.path.join(write_dir, "plugins/message_manager/pki"),
                     "--ca-dir", os.path.join(work, "ca"), "--config", prof_path])
            self.assertEqual(r.returncode, 0, r.stderr)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GROVE_")}
        g = Groved(os.path.join(tree, "bin/groved"), prof_path, write_dir, work, env=env)
        try:
            status = g.wait_ready(os.path.join(tree, "bin/grovectl"))
            plugins = running_plugins(status)
            self.assertEqual(sorted(plugins), sorted(expected), g.logs())
            self.assertTrue(all(s == "running" for s in plugins.values()), (plugins, g.logs()))
            self.assertEqual(os.path.realpath(status["plugin_dir"]),
                             os.path.realpath(os.path.join(tree, "lib/grove/plugins")))
            # Everything Grove's own came from the tree, nothing from the build tree.
            maps = mapped_files(g.proc.pid)
            grove_libs = [m for m in maps if "libgrove_" in m or "/lib/grove/plugins/" in m]
            self.assertTrue(grove_libs)
            for m in grove_libs:
                self.assertTrue(m.startswith(os.path.realpath(tree)), m)
            for line in idle_lines:
                deadline = time.monotonic() + 20
                while line not in g.logs() and time.monotonic() < deadline:
                    time.sleep(0.2)
                self.assertIn(line, g.logs())
            if while_running:
                while_running(g, work, write_dir, port, os.path.join(tree, "bin/grovectl"))
        finally:
            rc = g.stop()
        self.assertEqual(rc, 0, g.logs())

    def check_report(self, tree, plugins):
        with open(os.path.join(tree, "share/grove/image.json")) as f:
            report = json.load(f)
        self.assertEqual(report["plugins"], plugins)
        parts = {p["part"]: p for p in report["parts"]}
        for n in plugins:
            self.assertIn(f"plugin {n}", parts)
            self.assertGreater(parts[f"plugin {n}"]["bytes"], 0)
        for part in ("kernel", "grovectl", "runtime libraries", "configuration", "tools"):
            self.assertIn(part, parts)
        self.assertEqual(report["total_bytes"], sum(p["bytes"] for p in report["parts"]))
        return report

    def test_minimal_tree_contents_and_run(self):
        tree, r = self.build_tree("configs/images/minimal.yaml", "minimal")
        self.assertEqual(sorted(os.listdir(os.path.join(tree, "lib/grove/plugins"))),
                         ["libmessage_manager.so"])
        for f in ("bin/groved", "bin/grovectl", "bin/grove-certs",
                  "lib/grove/broker/grove_broker_plugin.so", "etc/grove/profile.yaml"):
            self.assertTrue(os.path.isfile(os.path.join(tree, f)), f)
        self.assertFalse(os.path.exists(os.path.join(tree, "lib/grove/python")))
        self.assertFalse(os.path.exists(os.path.join(tree, "etc/grove/group.yaml")))
        with open(os.path.join(tree, "etc/grove/profile.yaml")) as f:
            prof = yaml.safe_load(f)
        self.assertNotIn("image", prof)
        self.assertNotIn("plugin_dir", prof["kernel"])
        self.check_report(tree, ["message_manager"])
        # The build component ran against the tree, its output in the log.
        with open(os.path.join(tree, "share/grove/build.log")) as f:
            log = f.read()
        self.assertIn("phase validate, step CheckProfile", log)
        self.assertIn(" is valid", log)  # groved --check of the tree's profile
        self.assertIn("phase test, step Binaries", log)
        self.assertIn("libmessage_manager.so", log)
        self.assertIn("plugin message_manager", r.stdout)
        self.run_tree(tree, ["message_manager"])

    def test_default_tree_runs_its_five_plugins(self):
        tree, _ = self.build_tree("configs/images/default.yaml", "default")
        expected = ["heartbeat", "message_manager", "function_runtime", "local_resources",
                    "shadow"]
        self.assertEqual(sorted(os.listdir(os.path.join(tree, "lib/grove/plugins"))),
                         sorted(f"lib{n}.so" for n in expected))
        self.assertTrue(os.path.isfile(os.path.join(tree, "lib/grove/python/grove_function/runner.py")))
        with open(os.path.join(tree, "etc/grove/profile.yaml")) as f:
            prof = yaml.safe_load(f)
        self.assertEqual(prof["kernel"]["group"], os.path.join(tree, "etc/grove/group.yaml"))
        fr = [p for p in prof["plugins"] if p["name"] == "function_runtime"][0]
        self.assertEqual(fr["config"]["python_sdk_dir"], os.path.join(tree, "lib/grove/python"))
        report = self.check_report(tree, ["heartbeat", "message_manager", "function_runtime",
                                          "local_resources", "shadow"])
        # The group's function came with it and the tree's group names it there.
        self.assertTrue(os.path.isfile(os.path.join(tree, "lib/grove/functions/brain/grove_function_brain")))
        self.assertIn("function brain", {p["part"] for p in report["parts"]})
        with open(os.path.join(tree, "etc/grove/group.yaml")) as f:
            group = yaml.safe_load(f)
        brain = [fn for fn in group["functions"] if fn["name"] == "brain"][0]
        self.assertEqual(brain["config"]["codeUri"], os.path.join(tree, "lib/grove/functions/brain"))
        # Idle: the broker's start-up code released (as root, as this test runs; else
        # the refusal is said), and no plugin refused the cloud link it uses (shadow's
        # sync of the group's sync_shadow device: in cloud.system_clients).
        released = ("broker: start-up code pages released" if os.geteuid() == 0
                    else "broker: start-up code pages stay resident")
        self.run_tree(tree, expected, idle_lines=[released], while_running=self.quick_start)
        with open(os.path.join(self.tmp, "cwd-" + os.path.basename(tree), "groved.log")) as f:
            log = f.read()
        self.assertNotIn("not in cloud.system_clients", log)
        self.assertNotIn("function 'brain': cannot start", log)

    def quick_start(self, g, work, write_dir, port, grovectl):
        """The README's quick start, its two device commands as written there (paths and
        port of this tree): switch's "on" reaches the lamp through the brain function."""
        cmds = readme_device_commands()
        self.assertEqual(sorted(cmds), ["mosquitto_pub", "mosquitto_sub"], cmds)
        pki = os.path.join(write_dir, "plugins/message_manager/pki")
        for thing in ("switch", "lamp"):
            r = run([os.path.join(os.path.dirname(grovectl), "grove-certs"), "device", pki,
                     thing, "--ca-dir", os.path.join(work, "ca")])
            self.assertEqual(r.returncode, 0, r.stderr)

        def local(argv):
            out = [a.replace("var/", write_dir + "/", 1) if a.startswith("var/") else a
                   for a in argv]
            return [str(port) if a == "8883" else a for a in out]
        sub = subprocess.Popen(local(cmds["mosquitto_sub"]) + ["-C", "1", "-W", "30"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The subscription may not be in place yet: publish until the lamp hears one.
            deadline = time.monotonic() + 25
            while sub.poll() is None and time.monotonic() < deadline:
                r = run(local(cmds["mosquitto_pub"]))
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr + g.logs())
                time.sleep(1)
            out, err = sub.communicate(timeout=30)
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait()
        self.assertEqual(out.strip(), '{"state":"on"}', err + g.logs())
        status = json.loads(run([grovectl, "--socket", g.socket, "--json", "status"]).stdout)
        fr = [p for p in status["plugins"] if p["name"] == "function_runtime"][0]
        invoked = [m["value"] for m in fr["metrics"]
                   if m["name"] == "invocations" and m["labels"].get("function") == "brain"]
        self.assertEqual(len(invoked), 1, fr["metrics"])
        self.assertGreaterEqual(invoked[0], 1, fr["metrics"])

    def test_full_tree_runs_every_plugin(self):
        tree, _ = self.build_tree("configs/images/full.yaml", "full")
        built = sorted(f[3:-3] for f in os.listdir(os.path.join(BUILD, "lib/grove/plugins")))
        with open(os.path.join(SRC, "configs/images/full.yaml")) as f:
            listed = [p["name"] for p in yaml.safe_load(f)["plugins"]]
        self.assertEqual(sorted(listed), built)  # "full" is every plugin the build makes
        self.assertEqual(sorted(os.listdir(os.path.join(tree, "lib/grove/plugins"))),
                         sorted(f"lib{n}.so" for n in listed))
        self.run_tree(tree, listed)

    def test_plugin_not_built_is_named(self):
        prof = os.path.join(self.tmp, "p.yaml")
        with open(prof, "w") as f:
            yaml.safe_dump({"plugins": [{"name": "heartbeat"}, {"name": "no_such_plugin"},
                                        {"name": "also_missing"}]}, f)
        out = os.path.join(self.tmp, "out")
        r = grove_image("build", prof, "--out", out)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("not built", r.stderr)
        self.assertIn("no_such_plugin, also_missing", r.stderr)
        self.assertNotIn("heartbeat", r.stderr.split("not built")[1].split("(")[0])
        self.assertFalse(os.path.exists(out))  # refused before anything is written

    def test_function_code_not_there_is_named(self):
        group = os.path.join(self.tmp, "g.yaml")
        with open(group, "w") as f:
            yaml.safe_dump({"name": "g", "functions": [
                {"name": "gone", "config": {"handler": "x", "codeUri": "no/such/dir"}}]}, f)
        prof = os.path.join(self.tmp, "p.yaml")
        with open(prof, "w") as f:
            yaml.safe_dump({"kernel": {"group": group}, "plugins": [{"name": "heartbeat"}]}, f)
        out = os.path.join(self.tmp, "out")
        r = grove_image("build", prof, "--out", out)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("function gone: codeUri no/such/dir: no such file or directory", r.stderr)
        self.assertFalse(os.path.exists(out))  # refused before anything is written

    def write_component(self, name, steps, phase="build"):
        path = os.path.join(self.tmp, name + ".yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"name": name, "schemaVersion": 1.0,
                            "phases": [{"name": phase, "steps": steps}]}, f)
        return path

    def profile_with(self, *components):
        prof = os.path.join(self.tmp, "with-components.yaml")
        with open(prof, "w") as f:
            yaml.safe_dump({"plugins": [{"name": "heartbeat"}],
                            "image": {"components": list(components)}}, f)
        return prof

    def test_failing_component_fails_the_build_with_its_output(self):
        bad = self.write_component("fails", [
            {"name": "Fine", "action": "ExecuteBash",
             "inputs": {"commands": ["echo fine-step-ran", "test -x bin/groved"]}},
            {"name": "Breaks", "action": "ExecuteBash", "onFailure": "Abort",
             "inputs": {"commands": ["echo output-before-failure >&2", "false",
                                     "echo never-printed"]}},
            {"name": "After", "action": "ExecuteBash",
             "inputs": {"commands": ["echo after-step-ran"]}}])
        r = grove_image("build", self.profile_with(bad), "--out", os.path.join(self.tmp, "o"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("component fails: build.Breaks failed (exit code 1)", r.stderr)
        self.assertIn("output-before-failure", r.stderr.split("build failed")[1])
        self.assertIn("fine-step-ran", r.stderr)
        self.assertNotIn("never-printed", r.stderr)
        self.assertNotIn("after-step-ran", r.stderr)
        with open(os.path.join(self.tmp, "o/share/grove/build.log")) as f:
            self.assertIn("output-before-failure", f.read())

    def test_on_failure_retries_and_timeouts(self):
        counter = os.path.join(self.tmp, "attempts")
        comp = self.write_component("retries", [
            {"name": "Ignored", "action": "ExecuteBash", "onFailure": "Ignore",
             "inputs": {"commands": ["exit 3"]}},
            {"name": "Continued", "action": "ExecuteBash", "onFailure": "Continue",
             "inputs": {"commands": ["exit 4"]}},
            # Fails on its first attempt, passes on its second.
            {"name": "Flaky", "action": "ExecuteBash", "maxAttempts": 2,
             "inputs": {"commands": [f"echo x >> {counter}",
                                     f"test $(wc -l < {counter}) -ge 2"]}},
            {"name": "Env", "action": "ExecuteBash",
             "inputs": {"commands": ['test "$GROVE_IMAGE_ROOT" = "$PWD"',
                                     'test "$GROVE_IMAGE_COMPONENT" = retries']}}],
            phase="test")
        r = grove_image("build", self.profile_with(comp), "--out", os.path.join(self.tmp, "o"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Ignore: test.Ignored failed (exit code 3), going on", r.stderr)
        self.assertIn("Continue: test.Continued failed (exit code 4), going on", r.stderr)
        self.assertIn("attempt 2/2: exit code 0", r.stderr)
        with open(counter) as f:
            self.assertEqual(f.read().count("x"), 2)
        slow = self.write_component("slow", [
            {"name": "Hangs", "action": "ExecuteBash", "timeoutSeconds": 1,
             "inputs": {"commands": ["echo started", "sleep 600"]}}])
        r = grove_image("build", self.profile_with(slow), "--out", os.path.join(self.tmp, "o2"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("slow: build.Hangs failed (timed out after 1 s)", r.stderr)
        self.assertIn("started", r.stderr)

    def test_bad_component_refused_before_anything_is_written(self):
        bad = os.path.join(self.tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write("name: bad-doc\nschemaVersion: 1.0\nphases:\n  - name: deploy\n    steps: []\n")
        out = os.path.join(self.tmp, "o")
        r = grove_image("build", self.profile_with(bad), "--out", out)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("phases[0].name: must be one of build, validate, test, got 'deploy'", r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_tar_gz_and_non_empty_out(self):
        out = os.path.join(self.tmp, "minimal.tar.gz")
        r = grove_image("build", "configs/images/minimal.yaml", "--out", out, "--prefix",
                        "/opt/grove")
        self.assertEqual(r.returncode, 0, r.stderr)
        with tarfile.open(out) as t:
            names = set(t.getnames())
        for f in ("bin/groved", "bin/grovectl", "lib/grove/plugins/libmessage_manager.so",
                  "etc/grove/profile.yaml", "share/grove/image.json"):
            self.assertIn(f, names)
        self.assertIn("compressed", r.stdout)
        occupied = os.path.join(self.tmp, "occupied")
        os.makedirs(occupied)
        open(os.path.join(occupied, "keep"), "w").close()
        r = grove_image("build", "configs/images/minimal.yaml", "--out", occupied)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not empty", r.stderr)
        self.assertTrue(os.path.exists(os.path.join(occupied, "keep")))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v", *TESTS])
