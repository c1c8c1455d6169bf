#!/usr/bin/env python3
"""CPU time and wall time of one `runtime: python3` worker's start, to its first handled
item, against a bare `python3 -c pass` started the same way. Prints one JSON object.
Not a test: it reports figures and never fails on them.

This process plays function_runtime's part over a socketpair (descriptor 3 of the
worker, the environment the runtime gives): it starts `python3 [ARGS] -m
grove_function.runner noop.handler` (plugins/function_runtime/tests/python/noop.py),
reads its Hello, sends one Invoke (binary, or with --encoding json a JSON object, the
default encoding of a function), reads the Result (checked: the same id and bytes back),
then closes the socket and reaps it. The CPU time is the worker's own
(user + system, from wait4's rusage), which a loaded machine inflates far less than
wall time; function_bench's `python_cold_start` is the same start through the real
runtime, in wall time.

Each --sdk DIR (a Python SDK directory: build/sdk/function/python, or an older copy)
is measured in turn, alternating with the bare peer, --runs times.

Usage: python_start_bench.py [--sdk DIR]... [--runs N] [--python /usr/bin/python3]
                             [--exec-arg ARG]... [--encoding binary|json]
"""

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODE_DIR = os.path.join(REPO, "plugins", "function_runtime", "tests", "python")
sys.path.insert(0, os.path.join(REPO, "sdk", "function", "python"))
from grove_function import _wire  # noqa: E402  (the runtime's side of the frames)


def read_frame(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise RuntimeError("the worker closed its socket")
        head += chunk
    (n,) = struct.unpack(">I", head)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RuntimeError("the worker closed its socket mid-frame")
        data += chunk
    return _wire.Frame.decode(data)


def reap(proc):
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def bare(python):
    t0 = time.perf_counter()
    proc = subprocess.Popen([python, "-c", "pass"], close_fds=True)
    cpu = reap(proc)
    return time.perf_counter() - t0, cpu


def worker(python, sdk, exec_args, encoding, run):
    # The worker's end becomes descriptor 3 here (main() keeps 3 taken, so the pair is
    # never 3 itself) and is passed as it is: no preexec_fn, so started as bare() is.
    ours, theirs = socket.socketpair()
    os.dup2(theirs.fileno(), 3)
    theirs.close()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": sdk, "PYTHONUNBUFFERED": "1",
           "GROVE_FUNCTION_FD": "3", "GROVE_FUNCTION_TOKEN": "t%d" % run,
           "GROVE_FUNCTION_NAME": "bench", "GROVE_FUNCTION_MAX_FRAME": "4194304",
           "GROVE_FUNCTION_ENCODING": encoding}
    # JSON: what json.dumps writes back for it, so the reply is the same bytes.
    payload = b'{"item": %d}' % run if encoding == "json" else b"item %d" % run
    t0 = time.perf_counter()
    proc = subprocess.Popen([python, *exec_args, "-m", "grove_function.runner", "noop.handler"],
                            cwd=CODE_DIR, env=env, pass_fds=(3,))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 3)
    os.close(null)
    try:
        hello = read_frame(ours)
        if hello.which("body") != "hello" or hello.hello.token != "t%d" % run:
            raise RuntimeError("not a hello: %r" % hello)
        data = _wire.Frame(invoke=_wire.Invoke(id=run + 1, payload=payload)).encode()
        ours.sendall(struct.pack(">I", len(data)) + data)
        result = read_frame(ours).result
        wall = time.perf_counter() - t0
        if result is None or result.id != run + 1 or result.payload != payload:
            raise RuntimeError("not the item's result: %r" % result)
    finally:
        ours.close()
    cpu = reap(proc)
    if proc.returncode != 0:
        raise RuntimeError("the worker exited with %d" % proc.returncode)
    return wall, cpu


def summary(xs):
    xs = sorted(x * 1000 for x in xs)
    return {"p50_ms": round(statistics.median(xs), 2), "min_ms": round(xs[0], 2),
            "max_ms": round(xs[-1], 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdk", action="append",
                    help="a Python SDK directory (default: build/sdk/function/python)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--exec-arg", action="append", default=[],
                    help="an interpreter argument (a function's execArgs)")
    ap.add_argument("--encoding", choices=("binary", "json"), default="binary",
                    help="the function's inputPayloadEncodingType")
    args = ap.parse_args()
    null = os.open(os.devnull, os.O_RDONLY)
    if null != 3:
        os.dup2(null, 3)
        os.close(null)
    sdks = args.sdk or [os.path.join(REPO, "build", "sdk", "function", "python")]
    for sdk in sdks:  # once each first: bytecode caches written, pages warm
        worker(args.python, sdk, args.exec_arg, args.encoding, 0)
    bare(args.python)
    peer_wall, peer_cpu = [], []
    figures = {sdk: ([], []) for sdk in sdks}
    for run in range(args.runs):
        for sdk in sdks:
            w, c = bare(args.python)
            peer_wall.append(w)
            peer_cpu.append(c)
            w, c = worker(args.python, sdk, args.exec_arg, args.encoding, run)
            figures[sdk][0].append(w)
            figures[sdk][1].append(c)
    out = {"runs": args.runs, "python": args.python, "exec_args": args.exec_arg,
           "encoding": args.encoding,
           "load_1min": round(os.getloadavg()[0], 2),
           "bare_python3_c_pass": {"cpu": summary(peer_cpu), "wall": summary(peer_wall)},
           "workers": []}
    bare_cpu = statistics.median(peer_cpu)
    bare_wall = statistics.median(peer_wall)
    for sdk in sdks:
        wall, cpu = figures[sdk]
        out["workers"].append({
            "sdk": sdk, "cpu": summary(cpu), "wall": summary(wall),
            "cpu_over_bare_p50_ms": round((statistics.median(cpu) - bare_cpu) * 1000, 2),
            "wall_over_bare_p50_ms": round((statistics.median(wall) - bare_wall) * 1000, 2),
            "ratio_cpu_to_bare": round(statistics.median(cpu) / bare_cpu, 2)})
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
