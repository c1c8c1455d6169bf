"""The Python SDK on the standard library alone: run by ctest (python_sdk_standalone_test)
as ``python3 -S`` with PYTHONPATH naming the SDK only, so neither python3-protobuf nor
numpy (in dist-packages) can be imported, as on a device without them. wire_test.py
cannot show this: it imports google.protobuf itself, before the SDK.

It imports what a worker imports (grove_function, its runner, greengrasssdk), then runs
a real runner process and infer() without numpy against a runtime played over a
socketpair, and checks that no module of google.protobuf or numpy was ever loaded.
"""

import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

import greengrasssdk  # noqa: F401  (what a Greengrass-style function imports)
import grove_function
import grove_function.runner  # noqa: F401
from grove_function import _wire

FORBIDDEN = ("google", "numpy")


def loaded(modules):
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)


def send(sock, frame):
    data = frame.encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def receive(sock):
    head = sock.recv(4, socket.MSG_WAITALL)
    if len(head) < 4:
        return None
    return _wire.Frame.decode(sock.recv(struct.unpack(">I", head)[0], socket.MSG_WAITALL))


class Standalone(unittest.TestCase):
    def test_site_packages_are_out_of_reach(self):
        # Without this the test would prove nothing: python3 -S, PYTHONPATH the SDK only.
        self.assertTrue(sys.flags.no_site)
        for name in FORBIDDEN:
            with self.subTest(name=name), self.assertRaises(ImportError):
                __import__(name)

    def test_importing_the_sdk_loads_no_protobuf(self):
        self.assertEqual(loaded(sys.modules), [])

    def channel(self):
        """The SDK's channel on one end of a socketpair; returns the runtime's end."""
        runtime, worker = socket.socketpair()
        self.addCleanup(runtime.close)
        self.addCleanup(worker.close)
        runtime.settimeout(60)
        self.addCleanup(setattr, grove_function, "_channel", grove_function._channel)
        grove_function._channel = grove_function._Channel(worker.fileno(), 1 << 20, "f")
        return runtime

    def test_infer_without_numpy(self):
        runtime = self.channel()
        seen = {}

        def answer():
            frame = receive(runtime)
            seen["call"] = frame.infer_call
            seen["request"] = _wire.InferRequest.decode(frame.infer_call.request)
            resp = _wire.InferResponse(version="2", batch_size=1, outputs=[
                _wire.Tensor(name="y", dtype=1, shape=[1, 2], data=struct.pack("<2f", 1, 2))],
                top=[_wire.Label(index=1, label="b", score=0.5)])
            send(runtime, _wire.Frame(call_reply=_wire.CallReply(
                call_id=frame.infer_call.call_id, payload=resp.encode())))

        t = threading.Thread(target=answer)
        t.start()
        try:
            got = grove_function.infer("m", {"x": ("float32", [1, 3], [0.5, -1.0, 2.0])},
                                       top_k=1)
        finally:
            t.join()
        self.assertEqual(seen["call"].model, "m")
        (x,) = seen["request"].inputs
        self.assertEqual((x.name, x.dtype, x.shape, struct.unpack("<3f", x.data)),
                         ("x", 1, [1, 3], (0.5, -1.0, 2.0)))
        self.assertEqual(got, {"outputs": {"y": ("float32", (1, 2), struct.pack("<2f", 1, 2))},
                               "top": [{"index": 1, "label": "b", "score": 0.5}],
                               "version": "2", "batch_size": 1})
        self.assertEqual(loaded(sys.modules), [])

    def test_bad_names_are_refused_before_sending(self):
        # The runtime's rules (plugins/function_runtime/src/ipc.cpp): a bad name raises
        # Error("malformed: ...") and nothing reaches the socket; good ones are sent.
        runtime = self.channel()
        bad = [
            ("function", lambda: grove_function.invoke("a/b", {})),
            ("function", lambda: grove_function.invoke("a+b", {})),
            ("function", lambda: grove_function.invoke("#", {}, event=True)),
            ("function", lambda: grove_function.invoke("", {})),
            ("thing", lambda: grove_function.get_thing_shadow("my lamp")),
            ("thing", lambda: grove_function.get_thing_shadow("t" * 129)),
            ("thing", lambda: grove_function.delete_thing_shadow("")),
            ("shadow", lambda: grove_function.update_thing_shadow("lamp", {}, shadow="a b")),
            ("shadow", lambda: grove_function.get_thing_shadow("lamp", shadow="s" * 65)),
        ]
        for what, verb in bad:
            with self.subTest(what=what), self.assertRaises(grove_function.Error) as e:
                verb()
            self.assertIn("malformed: the %s name" % what, str(e.exception))
        runtime.setblocking(False)
        with self.assertRaises(BlockingIOError):
            runtime.recv(1)  # nothing was sent
        runtime.setblocking(True)
        runtime.settimeout(60)
        calls = []

        def answer(n):
            for _ in range(n):
                frame = receive(runtime)
                call = getattr(frame, frame.which("body"))
                calls.append(frame)
                send(runtime, _wire.Frame(call_reply=_wire.CallReply(
                    call_id=call.call_id, payload=b"{}")))

        t = threading.Thread(target=answer, args=(2,))
        t.start()
        try:
            grove_function.invoke("ok-name", {})
            grove_function.get_thing_shadow("t" * 128, shadow="s:_-" * 16)
        finally:
            t.join()
        self.assertEqual(len(calls), 2)

    def test_a_worker_runs_and_loads_no_protobuf(self):
        # A real runner, as function_runtime starts one (python3 -m grove_function.runner),
        # whose handler reports what its process has loaded.
        code = tempfile.TemporaryDirectory()
        self.addCleanup(code.cleanup)
        with open(os.path.join(code.name, "fn.py"), "w") as f:
            f.write("import sys\n"
                    "def handler(event, ctx):\n"
                    "    return sorted(m for m in sys.modules\n"
                    "                  if m.split('.')[0] in %r)\n" % (FORBIDDEN,))
        runtime, worker = socket.socketpair()
        self.addCleanup(runtime.close)
        runtime.settimeout(60)
        proc = subprocess.Popen(
            [sys.executable, "-S", "-m", "grove_function.runner", "fn.handler"],
            cwd=code.name, pass_fds=[worker.fileno()],
            env=dict(os.environ, GROVE_FUNCTION_FD=str(worker.fileno())))
        worker.close()
        try:
            hello = receive(runtime)
            self.assertEqual((hello.which("body"), hello.hello.error), ("hello", b""))
            send(runtime, _wire.Frame(invoke=_wire.Invoke(id=7, payload=b"{}")))
            reply = receive(runtime)
            self.assertEqual((reply.which("body"), reply.result.id, reply.result.error),
                             ("result", 7, b""))
            self.assertEqual(reply.result.payload, b"[]")
            runtime.shutdown(socket.SHUT_WR)
            self.assertEqual(proc.wait(60), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    unittest.main(verbosity=1)
