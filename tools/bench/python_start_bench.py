#!/usr/bin/env python3
"""CPU time and wall time of one `runtime: python3` worker's start, to its first handled
item and its exit, against a bare `python3 -c pass` started the same way. Prints one
JSON object. Not a test: it reports figures and never fails on them.

This process plays function_runtime's part over a socketpair (descriptor 3 of the
worker, the environment the runtime gives: PATH, LANG=C.UTF-8, PYTHONPATH the SDK,
PYTHONUNBUFFERED, the GROVE_FUNCTION_* variables): it starts `python3 [ARGS] -m
grove_function.runner noop.handler` (plugins/function_runtime/tests/python/noop.py),
reads its Hello, sends one Invoke (binary, or with --encoding json a JSON object, the
default encoding of a function), reads the Result (checked: the same id and bytes back),
then closes the socket and reaps it. The bare peer, `python3 [ARGS] -c pass`, gets the
same environment and arguments and is started by the same call. Both wall times run
from the start to the reaped exit (interpreter shutdown included on both sides); the
worker's start to its Result read is reported too (`first_reply`), with no peer. The
CPU time is each process's own (user + system, from wait4's rusage), which a loaded
machine inflates far less than wall time; function_bench's `python_cold_start` is the
same start through the real runtime, in wall time.

The runtime's side of the frames is protoc's function_pb2 when --reference names a
directory holding it (default: the build's build/sdk/function/python/reference, made
with the tests), so the SDK's codec is checked against another implementation; else
the SDK's own _wire (then the codec only meets itself; `runtime_side` says which).

Each --sdk DIR (a Python SDK directory: build/sdk/function/python, or an older copy)
is measured in turn, alternating with the bare peer, --runs times.

Usage: python_start_bench.py [--sdk DIR]... [--runs N] [--python /usr/bin/python3]
                             [--exec-arg ARG]... [--encoding binary|json]
                             [--reference DIR]
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
BUILD_SDK = os.path.join(REPO, "build", "sdk", "function", "python")
sys.path.insert(0, os.path.join(REPO, "sdk", "function", "python"))
from grove_function import _wire  # noqa: E402  (the runtime's side without a reference)

# The runtime's side of the frames: protoc's function_pb2 (set by main()), else _wire.
# Both read the same way here: which("body")/WhichOneof, .hello.token, .result.
pb = None


def body(frame):
    return frame.WhichOneof("body") if pb is not None else frame.which("body")


def invoke_frame(id, payload):
    if pb is None:
        return _wire.Frame(invoke=_wire.Invoke(id=id, payload=payload)).encode()
    frame = pb.Frame()
    frame.invoke.id = id
    frame.invoke.payload = payload
    return frame.SerializeToString()


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
    return pb.Frame.FromString(data) if pb is not None else _wire.Frame.decode(data)


def reap(proc):
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def environment(sdk, encoding, run):
    """What function_runtime gives a python3 instance (function_runtime.cpp,
    start_instance; python_runtime.cpp): the worker's and the bare peer's alike."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "GROVE_FUNCTION_NAME": "bench", "GROVE_FUNCTION_FD": "3",
            "GROVE_FUNCTION_TOKEN": "t%d" % run, "GROVE_FUNCTION_MAX_FRAME": "4194304",
            "PYTHONPATH": sdk, "PYTHONUNBUFFERED": "1", "GROVE_FUNCTION_ENCODING": encoding}


def start(python, exec_args, tail, env):
    # The same call for both: the worker's end of the pair is descriptor 3 here (main()
    # keeps 3 taken, so the pair is never 3 itself), passed as it is, no preexec_fn; the
    # peer gets main()'s /dev/null there.
    return subprocess.Popen([python, *exec_args, *tail], cwd=CODE_DIR, env=env,
                            pass_fds=(3,))


def bare(python, sdk, exec_args, encoding, run):
    t0 = time.perf_counter()
    proc = start(python, exec_args, ["-c", "pass"], environment(sdk, encoding, run))
    cpu = reap(proc)
    return time.perf_counter() - t0, cpu


def worker(python, sdk, exec_args, encoding, run):
    ours, theirs = socket.socketpair()
    os.dup2(theirs.fileno(), 3)
    theirs.close()
    # JSON: what json.dumps writes back for it, so the reply is the same bytes.
    payload = b'{"item": %d}' % run if encoding == "json" else b"item %d" % run
    t0 = time.perf_counter()
    proc = start(python, exec_args, ["-m", "grove_function.runner", "noop.handler"],
                 environment(sdk, encoding, run))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 3)
    os.close(null)
    try:
        hello = read_frame(ours)
        if body(hello) != "hello" or hello.hello.token != "t%d" % run:
            raise RuntimeError("not a hello: %r" % hello)
        data = invoke_frame(run + 1, payload)
        ours.sendall(struct.pack(">I", len(data)) + data)
        reply = read_frame(ours)
        first_reply = time.perf_counter() - t0
        if (body(reply) != "result" or reply.result.id != run + 1
                or reply.result.payload != payload):
            raise RuntimeError("not the item's result: %r" % reply)
    finally:
        ours.close()  # the runner's end: it returns, the interpreter shuts down
    cpu = reap(proc)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError("the worker exited with %d" % proc.returncode)
    return wall, cpu, first_reply


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
    ap.add_argument("--reference", default=os.path.join(BUILD_SDK, "reference"),
                    help="a directory with protoc's function_pb2 (the runtime's side)")
    args = ap.parse_args()
    global pb
    if os.path.isfile(os.path.join(args.reference, "function_pb2.py")):
        sys.path.insert(0, args.reference)
        import function_pb2
        pb = function_pb2
    null = os.open(os.devnull, os.O_RDONLY)
    if null != 3:
        os.dup2(null, 3)
        os.close(null)
    sdks = args.sdk or [BUILD_SDK]
    for sdk in sdks:  # once each first: bytecode caches written, pages warm
        worker(args.python, sdk, args.exec_arg, args.encoding, 0)
        bare(args.python, sdk, args.exec_arg, args.encoding, 0)
    peer_wall, peer_cpu = [], []
    figures = {sdk: ([], [], []) for sdk in sdks}
    for run in range(args.runs):
        for sdk in sdks:
            w, c = bare(args.python, sdk, args.exec_arg, args.encoding, run)
            peer_wall.append(w)
            peer_cpu.append(c)
            for xs, x in zip(figures[sdk], worker(args.python, sdk, args.exec_arg,
                                                  args.encoding, run)):
                xs.append(x)
    out = {"runs": args.runs, "python": args.python, "exec_args": args.exec_arg,
           "encoding": args.encoding, "runtime_side": "function_pb2" if pb else "_wire",
           "load_1min": round(os.getloadavg()[0], 2),
           "bare_python3_c_pass": {"cpu": summary(peer_cpu), "wall": summary(peer_wall)},
           "workers": []}
    bare_cpu = statistics.median(peer_cpu)
    bare_wall = statistics.median(peer_wall)
    for sdk in sdks:
        wall, cpu, first_reply = figures[sdk]
        out["workers"].append({
            "sdk": sdk, "cpu": summary(cpu), "wall": summary(wall),
            "first_reply": summary(first_reply),
            "cpu_over_bare_p50_ms": round((statistics.median(cpu) - bare_cpu) * 1000, 2),
            "wall_over_bare_p50_ms": round((statistics.median(wall) - bare_wall) * 1000, 2),
            "ratio_cpu_to_bare": round(statistics.median(cpu) / bare_cpu, 2),
            "ratio_wall_to_bare": round(statistics.median(wall) / bare_wall, 2)})
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
