#!/usr/bin/env python3
"""Start-up time of groved: from just before exec to the 'ready:' log line (every plugin
of the image started). Prints one JSON object on stdout. Not a test: it reports figures
and never fails on them.

Peer: the time to exec and exit `groved --help` (dynamic loading and static
initialisation of the same binary, no kernel), the floor no start-up can beat.

The default image runs message_manager in TLS mode: every start gets a fresh write dir
with the default PKI (tools/grove-certs ensure-default, made before the clock starts) and
runs with cwd = the repository, as tools/run does. Its managed Mosquitto listens on 8883;
each stop waits until that broker is gone, so the next start finds the port free.

Usage: startup_bench.py [--build DIR] [--config FILE] [--runs R] [--warmup W]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import children, ensure_default_pki, stop, wait_gone, wait_ready  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READY = re.compile(r"ready: (\d+) of (\d+) plugins running \(([\d.]+) ms\)")
TARGET_MS = 100


def percentile(xs, q):
    """Nearest-rank percentile of a non-empty list."""
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, round(q * (len(xs) - 1))))
    return xs[k]


def one_start(groved, config, timeout_s=10.0):
    """Returns (wall ms to 'ready:', kernel's own ms, running, total) for one start."""
    write_dir = tempfile.mkdtemp(prefix="grove-startup-")
    proc = None
    try:
        ensure_default_pki(write_dir)
        t0 = time.perf_counter_ns()
        proc = subprocess.Popen([groved, "--config", config, "--write-dir", write_dir],
                                cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, bufsize=0)
        # The deadline keeps a groved that never gets ready from hanging the bench.
        text, t1 = wait_ready(proc, timeout_s, keep_draining=False)
        m = READY.search(text)
        if not m:
            raise RuntimeError("unparsable ready line: " + text)
        return ((t1 - t0) / 1e6, float(m.group(3)), int(m.group(1)), int(m.group(2)))
    finally:
        if proc is not None:
            kids = children(proc.pid)  # the managed broker, to be gone before the next start
            stop(proc)
            proc.stderr.close()
            wait_gone(kids)
        shutil.rmtree(write_dir, ignore_errors=True)


def one_exec(groved):
    """Wall ms to exec `groved --help` and reap it."""
    t0 = time.perf_counter_ns()
    subprocess.run([groved, "--help"], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter_ns() - t0) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--config", default=os.path.join(REPO, "configs/images/default.yaml"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=1,
                    help="discarded starts first (page cache, dynamic loader caches)")
    args = ap.parse_args()
    groved = os.path.join(args.build, "bin", "groved")
    out = {"benchmark": "startup", "runs": args.runs, "config": args.config}
    try:
        for _ in range(args.warmup):
            one_start(groved, args.config)
            one_exec(groved)
        walls, kernels, floors = [], [], []
        plugins = None
        for _ in range(args.runs):
            wall, own, running, total = one_start(groved, args.config)
            walls.append(wall)
            kernels.append(own)
            plugins = (running, total)
            # Interleaved with the starts so both see the same machine state.
            floors.append(one_exec(groved))
    except Exception as e:  # report, do not crash: the JSON line is the interface
        out["error"] = str(e)
        print(json.dumps(out))
        return 1
    p50 = statistics.median(walls)
    floor = statistics.median(floors)
    out.update({
        "p50_ms": round(p50, 2),
        "p90_ms": round(percentile(walls, 0.9), 2),
        "min_ms": round(min(walls), 2),
        "max_ms": round(max(walls), 2),
        "kernel_ready_p50_ms": round(statistics.median(kernels), 2),
        "plugins_running": plugins[0],
        "plugins_total": plugins[1],
        "exec_floor_p50_ms": round(floor, 2),
        "ratio_to_exec_floor": round(p50 / floor, 2) if floor > 0 else None,
        "target_ms": TARGET_MS,
        "meets_target": p50 <= TARGET_MS and plugins[0] == plugins[1],
    })
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
