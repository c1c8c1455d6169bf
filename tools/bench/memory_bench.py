#!/usr/bin/env python3
"""Idle memory of groved on an image, as PSS from /proc/PID/smaps_rollup, next to an idle
Mosquitto broker (the peer: a small C daemon every Grove device runs anyway). The default
image runs message_manager, whose managed Mosquitto is a child of groved: its PSS is
reported too, and groved + broker together. Prints one JSON object on stdout. Not a test:
it reports figures and never fails on them.

With --breakdown it adds where the memory goes (smaps_breakdown.py): per library, per
thread stack, the allocator's anonymous memory, for groved and its broker.

The peer runs first, on its own, and is stopped before groved starts: running beside
groved it would map the same Mosquitto, OpenSSL and C library pages as groved's broker,
take half of each, and keep them from being reclaimed (--peer-alongside does that, as
this script did until 2026-12-04).

Usage: memory_bench.py [--build DIR] [--image kernel|default | --config FILE]
                       [--idle SECONDS] [--mosquitto PATH] [--breakdown] [--peer-alongside]
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
from smaps_breakdown import breakdowns  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "support"))
from free_port import free_port  # noqa: E402,F401  (group_bench imports it from here)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Issue 8: groved alone on the kernel-only image, groved + its broker on the default one.
TARGET_PSS_KB = 8192
TARGET_WITH_BROKER_PSS_KB = 16384
IMAGES = {"kernel": "configs/images/kernel.yaml", "default": "configs/images/default.yaml"}
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
    ap.add_argument("--image", choices=sorted(IMAGES), default="default",
                    help="kernel: groved + heartbeat; default: + message_manager and broker")
    ap.add_argument("--config", help="another image profile (overrides --image)")
    # groved releases its start-up code 2 s after ready (kernel.release_code_pages): read
    # the state an idle device stays in, not the start-up residue.
    ap.add_argument("--idle", type=float, default=6.0, help="seconds idle before reading")
    ap.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    ap.add_argument("--breakdown", action="store_true",
                    help="add per-library / per-thread / allocator figures")
    ap.add_argument("--peer-alongside", action="store_true",
                    help="run the peer beside groved, not before it (the figures up to "
                         "2026-12-04)")
    args = ap.parse_args()
    config = args.config or os.path.join(REPO, IMAGES[args.image])
    groved = os.path.join(args.build, "bin", "groved")
    grovectl = os.path.join(args.build, "bin", "grovectl")
    tmp = tempfile.mkdtemp(prefix="grove-memory-")
    write_dir = os.path.join(tmp, "var")
    out = {"benchmark": "idle_memory", "config": config}
    gproc = mproc = None
    m = peer = None

    def start_peer():
        port = free_port()
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "log_dest none\n" % port)
        proc = subprocess.Popen([args.mosquitto, "-c", conf], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(proc, port)
        return proc

    try:
        if not args.peer_alongside:
            mproc = start_peer()
            time.sleep(args.idle)
            m = smaps_rollup(mproc.pid)
            peer = breakdowns([mproc.pid])[mproc.pid]  # the peer alone, on its own
            stop(mproc)
            mproc = None
        with open(config) as f:
            with_broker = "message_manager" in f.read()
        if with_broker:
            ensure_default_pki(write_dir)
        # cwd = the repository, as tools/run does: the image names its group relative to it.
        gproc = subprocess.Popen(
            [groved, "--config", config, "--write-dir", write_dir], cwd=REPO,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            bufsize=0)
        out["ready_line"] = wait_ready(gproc)[0]
        bpid = None
        if with_broker:
            # The broker is up and Grove's own client connected: the idle state of a device.
            wait_status(gproc, grovectl, os.path.join(write_dir, "run", "control.sock"),
                        ["message_manager.local_link: connected"])
            bpid = broker_child(gproc.pid)
        if args.peer_alongside:
            mproc = start_peer()
        time.sleep(args.idle)
        g = smaps_rollup(gproc.pid)
        if args.peer_alongside:
            m = smaps_rollup(mproc.pid)
        out["peer"] = "alongside" if args.peer_alongside else "before groved, on its own"
        out.update({
            "groved_pss_kb": g["Pss"],
            "groved_rss_kb": g["Rss"],
            "groved_private_kb": g["Private_Clean"] + g["Private_Dirty"],
            "groved_smaps_rollup_kb": g,
            "mosquitto_pss_kb": m["Pss"],
            "mosquitto_rss_kb": m["Rss"],
            "mosquitto_private_kb": m["Private_Clean"] + m["Private_Dirty"],
            "ratio_to_mosquitto": round(g["Pss"] / m["Pss"], 2) if m["Pss"] else None,
        })
        # "alone": as if only groved and its broker ran (needs root; see smaps_breakdown).
        pids = [gproc.pid] + ([bpid] if bpid is not None else [])
        bd = breakdowns(pids)
        alone = {pid: bd[pid]["alone"]["pss_kb"] for pid in pids if "alone" in bd[pid]}
        if alone:
            out["groved_alone_kb"] = alone[gproc.pid]
            # What is left when the C/C++ runtimes count as shared with the rest of a device.
            out["groved_alone_without_system_libraries_kb"] = \
                alone[gproc.pid] - bd[gproc.pid]["alone"]["system_libraries_pss_kb"]
            if peer is None:
                peer = breakdowns([mproc.pid])[mproc.pid]  # the peer alone, on its own
            if "alone" in peer:
                out["mosquitto_alone_kb"] = peer["alone"]["pss_kb"]
                out["alone_ratio_to_mosquitto"] = round(
                    alone[gproc.pid] / peer["alone"]["pss_kb"], 2)
        if bpid is None:
            out.update({"target_pss_kb": TARGET_PSS_KB, "meets_target": g["Pss"] <= TARGET_PSS_KB})
            if alone:
                out["meets_target_alone"] = alone[gproc.pid] <= TARGET_PSS_KB
        else:
            b = smaps_rollup(bpid)
            out.update({
                "broker_pss_kb": b["Pss"],
                "broker_private_kb": b["Private_Clean"] + b["Private_Dirty"],
                "groved_plus_broker_pss_kb": g["Pss"] + b["Pss"],
                "plus_broker_ratio_to_mosquitto":
                    round((g["Pss"] + b["Pss"]) / m["Pss"], 2) if m["Pss"] else None,
            })
            if alone:
                out["broker_alone_kb"] = alone[bpid]
                out["groved_plus_broker_alone_kb"] = alone[gproc.pid] + alone[bpid]
                out["groved_plus_broker_alone_without_system_libraries_kb"] = \
                    out["groved_plus_broker_alone_kb"] - sum(
                        bd[p]["alone"]["system_libraries_pss_kb"] for p in pids)
                out["meets_target_alone"] = \
                    out["groved_plus_broker_alone_kb"] <= TARGET_WITH_BROKER_PSS_KB
            out.update({"target_pss_kb": TARGET_WITH_BROKER_PSS_KB,
                        "meets_target":
                            out["groved_plus_broker_pss_kb"] <= TARGET_WITH_BROKER_PSS_KB})
        for pid, key in zip(pids, ("groved", "broker")):
            out[key + "_threads"] = bd[pid]["threads"]
            if args.breakdown:
                out[key + "_breakdown"] = bd[pid]
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
