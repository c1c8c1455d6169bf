#!/usr/bin/env python3
"""OTA update times (plugins/ota): from `grove-ota install` of a bundle (verify, stage,
switch, SIGTERM to the running groved) to the new release serving (its grovectl status
answers) and to the watchdog journaling it healthy; and for a release whose groved exits
at start, to the rollback complete (journal `rolled_back`, the previous groved serving).
Prints one JSON object on stdout. Not a test: it reports figures and never fails on them.

Peer: a plain restart of the same groved (SIGTERM, start again, until status answers),
the floor an update's restart cannot beat. Ratios are update / restart.

Usage: ota_bench.py [--build DIR] [--runs R] [--health-seconds H]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def now():
    return time.perf_counter()


def make_tree(build, d, version, crash=False):
    os.makedirs(f"{d}/bin")
    os.makedirs(f"{d}/lib/grove/plugins")
    os.makedirs(f"{d}/etc/grove")
    for b in ("groved", "grovectl"):
        shutil.copy2(f"{build}/bin/{b}", f"{d}/bin/{b}")
    for lib in ("libgrove_core.so.0", "libgrove_proto.so"):
        shutil.copy2(f"{build}/lib/{lib}", f"{d}/lib/{lib}")
    shutil.copy2(f"{build}/lib/grove/plugins/libheartbeat.so", f"{d}/lib/grove/plugins/")
    if crash:
        with open(f"{d}/bin/groved", "w") as f:
            f.write("#!/bin/sh\nexit 3\n")
    with open(f"{d}/etc/grove/profile.yaml", "w") as f:
        f.write("kernel:\n  log_level: warn\nplugins:\n  - name: heartbeat\n"
                f"    config:\n      interval_ms: 200\n      topic: grove/hb/{version}\n")


def status(grovectl, sock):
    r = subprocess.run([grovectl, "--socket", sock, "--json", "--timeout", "2", "status"],
                       capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait_for(pred, timeout=60.0):
    deadline = now() + timeout
    while now() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise RuntimeError("timed out")


def serving(grovectl, sock, version):
    def pred():
        s = status(grovectl, sock)
        return s and s.get("details", {}).get("heartbeat.beating", "").endswith(version)
    return pred


def phase(root):
    try:
        with open(f"{root}/ota-state.json") as f:
            return json.load(f).get("phase")
    except (OSError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "../../build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--health-seconds", type=int, default=1)
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    ota, watchdog = f"{build}/bin/grove-ota", f"{build}/bin/grove-ota-watchdog"
    tmp = tempfile.mkdtemp(prefix="grove-ota-bench-")
    root, sock = f"{tmp}/root", f"{tmp}/root/var/run/control.sock"
    grovectl = f"{build}/bin/grovectl"
    wd = None
    try:
        subprocess.run([ota, "keygen", f"{tmp}/k"], check=True, capture_output=True)

        def bundle(version, crash=False):
            make_tree(build, f"{tmp}/t{version}", version, crash)
            out = f"{tmp}/b{version}.tar"
            subprocess.run([ota, "bundle", "--tree", f"{tmp}/t{version}", "--version", version,
                            "--key", f"{tmp}/k.key", "--out", out], check=True,
                           capture_output=True)
            return out

        subprocess.run([ota, "install", bundle("1.0.0"), "--root", root, "--trust",
                        f"{tmp}/k.pub"], check=True, capture_output=True)
        args = ["-c", f"{root}/current/etc/grove/profile.yaml", "-p",
                f"{root}/current/lib/grove/plugins", "-w", f"{root}/var"]
        wd = subprocess.Popen([watchdog, "--root", root, "--socket", sock, "--health-seconds",
                               str(a.health_seconds), "--start-seconds", "20", "--"] + args,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(serving(grovectl, sock, "1.0.0"))
        serve_ms, healthy_ms, rollback_ms, restart_ms = [], [], [], []
        current = "1.0.0"
        for run in range(a.runs):
            good, bad = f"1.{run + 1}.0", f"1.{run + 1}.1"
            good_b, bad_b = bundle(good), bundle(bad, crash=True)
            # update -> serving -> healthy
            pid = status(grovectl, sock)["pid"]
            t0 = now()
            subprocess.run([ota, "install", good_b, "--root", root, "--trust", f"{tmp}/k.pub",
                            "--restart-pid", str(pid)], check=True, capture_output=True)
            wait_for(serving(grovectl, sock, good))
            serve_ms.append((now() - t0) * 1e3)
            wait_for(lambda: phase(root) == "healthy")
            healthy_ms.append((now() - t0) * 1e3)
            current = good
            # a crashing release -> rollback complete, previous serving
            pid = status(grovectl, sock)["pid"]
            t0 = now()
            subprocess.run([ota, "install", bad_b, "--root", root, "--trust", f"{tmp}/k.pub",
                            "--restart-pid", str(pid)], check=True, capture_output=True)
            wait_for(lambda: phase(root) == "rolled_back")
            wait_for(serving(grovectl, sock, current))
            rollback_ms.append((now() - t0) * 1e3)
        # peer: plain restart of the same groved, without the watchdog
        wd.send_signal(signal.SIGTERM)
        wd.wait(30)
        wd = None
        rel = os.path.realpath(f"{root}/current")
        for _ in range(a.runs):
            t0 = now()
            p = subprocess.Popen([f"{rel}/bin/groved"] + args, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            wait_for(serving(grovectl, sock, current))
            restart_ms.append((now() - t0) * 1e3)
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        med = statistics.median
        print(json.dumps({
            "bench": "ota_bench",
            "runs": a.runs,
            "health_seconds": a.health_seconds,
            "bundle_bytes": os.path.getsize(f"{tmp}/b{current}.tar"),
            "apply_to_serving_ms": round(med(serve_ms), 1),
            "apply_to_healthy_ms": round(med(healthy_ms), 1),
            "apply_to_rollback_complete_ms": round(med(rollback_ms), 1),
            "peer_plain_restart_ms": round(med(restart_ms), 1),
            "ratio_serving_vs_restart": round(med(serve_ms) / med(restart_ms), 2),
            "ratio_rollback_vs_restart": round(med(rollback_ms) / med(restart_ms), 2),
        }, indent=2))
    finally:
        if wd is not None:
            wd.send_signal(signal.SIGTERM)
            try:
                wd.wait(30)
            except subprocess.TimeoutExpired:
                wd.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
