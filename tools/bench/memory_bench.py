#!/usr/bin/env python3
"""Idle memory of groved on an image, as PSS from /proc/PID/smaps_rollup, next to an idle
Mosquitto broker (the peer: a small C daemon every Grove device runs anyway). The default
image runs message_manager, whose managed Mosquitto is a child of groved: its PSS is
reported too, and groved + broker together. Prints one JSON object on stdout. Not a test:
it reports figures and never fails on them.

Usage: memory_bench.py [--build DIR] [--config FILE] [--idle SECONDS] [--mosquitto PATH]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import (children, ensure_default_pki, process_name, wait_ready,  # noqa: E402
                       stop, wait_status)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET_PSS_KB = 8192
FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Shared_Dirty",
          "Private_Clean", "Private_Dirty", "Swap")


def smaps_rollup(pid):
    """The kB fields of /proc/PID/smaps_rollup."""
    result = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB" and parts[0].rstrip(":") in FIELDS:
                result[parts[0].rstrip(":")] = int(parts[1])
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_child(pid, timeout_s=10.0):
    """The pid of groved's managed Mosquitto (a direct child named mosquitto)."""
    deadline = time.monotonic() + timeout_s
    while True:
        kids = [k for k in children(pid) if process_name(k) == "mosquitto"]
        if kids:
            return kids[0]
        if time.monotonic() > deadline:
            raise RuntimeError("groved has no mosquitto child after %.0f s" % timeout_s)
        time.sleep(0.05)


def wait_listening(proc, port, timeout_s=10.0):
    """Waits until the broker accepts TCP connections on `port`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mosquitto exited (%s)" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto: not listening on %d within %.0f s" % (port, timeout_s))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--config", default=os.path.join(REPO, "configs/images/default.yaml"))
    ap.add_argument("--idle", type=float, default=1.0, help="seconds idle before reading")
    ap.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    args = ap.parse_args()
    groved = os.path.join(args.build, "bin", "groved")
    grovectl = os.path.join(args.build, "bin", "grovectl")
    tmp = tempfile.mkdtemp(prefix="grove-memory-")
    write_dir = os.path.join(tmp, "var")
    out = {"benchmark": "idle_memory", "config": args.config}
    gproc = mproc = None
    try:
        ensure_default_pki(write_dir)
        # cwd = the repository, as tools/run does: the image names its group relative to it.
        gproc = subprocess.Popen(
            [groved, "--config", args.config, "--write-dir", write_dir], cwd=REPO,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            bufsize=0)
        out["ready_line"] = wait_ready(gproc)[0]
        # The broker is up and Grove's own client connected: the idle state of a device.
        wait_status(gproc, grovectl, os.path.join(write_dir, "run", "control.sock"),
                    ["message_manager.local_link: connected"])
        bpid = broker_child(gproc.pid)
        port = free_port()
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "log_dest none\n" % port)
        mproc = subprocess.Popen([args.mosquitto, "-c", conf], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(mproc, port)
        time.sleep(args.idle)
        g = smaps_rollup(gproc.pid)
        b = smaps_rollup(bpid)
        m = smaps_rollup(mproc.pid)
        out.update({
            "groved_pss_kb": g["Pss"],
            "groved_rss_kb": g["Rss"],
            "groved_private_kb": g["Private_Clean"] + g["Private_Dirty"],
            "groved_smaps_rollup_kb": g,
            "broker_pss_kb": b["Pss"],
            "broker_private_kb": b["Private_Clean"] + b["Private_Dirty"],
            "groved_plus_broker_pss_kb": g["Pss"] + b["Pss"],
            "mosquitto_pss_kb": m["Pss"],
            "mosquitto_rss_kb": m["Rss"],
            "mosquitto_private_kb": m["Private_Clean"] + m["Private_Dirty"],
            "ratio_to_mosquitto": round(g["Pss"] / m["Pss"], 2) if m["Pss"] else None,
            "plus_broker_ratio_to_mosquitto":
                round((g["Pss"] + b["Pss"]) / m["Pss"], 2) if m["Pss"] else None,
            "target_pss_kb": TARGET_PSS_KB,
            "meets_target": g["Pss"] <= TARGET_PSS_KB,
        })
    except Exception as e:  # report, do not crash: the JSON line is the interface
        out["error"] = str(e)
    finally:
        stop(gproc)
        stop(mproc)
        if gproc is not None:
            gproc.stderr.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
