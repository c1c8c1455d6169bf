"""The runner of a ``runtime: python3`` function: function_runtime starts
``python3 [execArgs] -m grove_function.runner module.function`` in the function's code
directory. It imports the handler, says hello to the runtime and calls
``handler(event, context)`` for each work item until the runtime closes the socket.

- The event: the payload decoded as GROVE_FUNCTION_ENCODING says (the function's
  inputPayloadEncodingType): ``json`` -> the decoded value (a dict for an object),
  ``binary`` -> bytes.
- The return value is the reply of a RequestResponse invocation: bytes as they are,
  anything else JSON-encoded (None -> ``null``).
- An exception is the item's error ("ValueError: ..."), its traceback goes to the
  function's log, and the instance goes on with the next item.
- A handler that does not import ends the instance before it serves: its hello carries
  the error, which the runtime shows as the function's last error (grovectl functions),
  and the traceback goes to the function's log.
"""

import os
import sys

import grove_function as gf
from grove_function import _wire as wire


def _traceback():
    import traceback  # only when something failed: keeps the cold start short
    return traceback.format_exc().rstrip()


class _LogHandler:
    """Sends the records of Python's logging to the function's log (made a
    logging.Handler lazily: importing logging costs a cold start that rarely needs it)."""

    @staticmethod
    def install():
        import logging

        class Handler(logging.Handler):
            def emit(self, record):
                try:
                    level = min(4, max(0, record.levelno // 10 - 1))
                    gf.log(level, self.format(record))
                except Exception:  # never let logging fail the handler
                    self.handleError(record)

        h = Handler()
        h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(h)
        if root.level == logging.WARNING:  # untouched: Greengrass logs INFO and above,
            # or the group's Lambda logger says (the runtime also drops lines under it)
            level = os.environ.get("GROVE_FUNCTION_LOG_LEVEL", "INFO")
            root.setLevel({"DEBUG": logging.DEBUG, "WARN": logging.WARNING,
                           "ERROR": logging.ERROR, "FATAL": logging.CRITICAL}.get(
                               level, logging.INFO))


def _import_handler(spec):
    """The callable `spec` names (module.function, the module relative to the code
    directory), or raises."""
    module_name, _, function_name = spec.rpartition(".")
    if not module_name or not function_name:
        raise ValueError("handler '%s' is not module.function" % spec)
    __import__(module_name)
    handler = getattr(sys.modules[module_name], function_name)
    if not callable(handler):
        raise TypeError("handler '%s' is not callable" % spec)
    return handler


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: python3 -m grove_function.runner module.function\n")
        return 2
    try:
        chan = gf._chan()
    except gf.Error as e:
        sys.stderr.write("grove function: %s\n" % e)
        return 2
    # Invokes taken in flight: those read ahead wait in chan.invokes (the runtime sends at
    # most its pipeline_depth); the handler still runs one at a time, in order.
    hello = wire.Hello(token=os.environ.get("GROVE_FUNCTION_TOKEN", ""), protocol=1,
                     pipeline=64, recall=True)
    # The code directory (the instance's working directory) first, as Lambda does.
    code_dir = os.getcwd()
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    try:
        handler = _import_handler(argv[1])
    except BaseException as e:  # SyntaxError, SystemExit at import: all the function's fault
        sys.stderr.write(_traceback() + "\n")
        hello.error = gf._error_text("handler '%s' does not import: %s: %s"
                                     % (argv[1], type(e).__name__, e), chan.max_frame)
        chan.send(wire.Frame(hello=hello))
        return 3
    if "logging" in sys.modules:
        _LogHandler.install()
    # Set for pinned instances only (statusTimeoutInSeconds).
    status_interval = int(os.environ.get("GROVE_FUNCTION_STATUS_INTERVAL_S", "0") or 0)
    hello.status = status_interval > 0
    chan.send(wire.Frame(hello=hello))
    if status_interval > 0:
        chan.start_status(status_interval)
    binary = os.environ.get("GROVE_FUNCTION_ENCODING", "json") == "binary"
    name = chan.name
    # Imported with the first JSON to read or write: binary functions skip it. A JSON
    # function reads JSON first thing: importing it here, after the hello, overlaps the
    # import (~3 ms of CPU: json pulls in re) with the runtime's answer to the hello.
    json = None
    if not binary:
        import json
    invokes = chan.invokes
    while True:
        frame = invokes.popleft() if invokes else chan.read()
        if frame is None:
            return 0  # the runtime closed the socket: it ended us
        inv = frame.invoke
        if inv is None:
            if frame.recall is None:
                continue  # a late reply of a verb that gave up
            chan.recall = True
        if chan.recalled():
            # None of the items held runs here (nor this one): the runtime queues them again.
            invokes.clear()
            chan.recall = False
            chan.send(wire.Frame(recalled=wire.Recalled()))
            continue
        ctx = gf.Context(name, inv.subject, inv.source, inv.invocation_id, inv.content_type,
                         inv.event, inv.remaining_ms)
        result = wire.Result(id=inv.id)
        try:
            if binary:
                event = inv.payload
            else:
                if json is None:
                    import json
                event = json.loads(inv.payload)
            reply = handler(event, ctx)
            if isinstance(reply, (bytes, bytearray, memoryview)):
                result.payload = bytes(reply)
            else:
                if json is None:
                    import json
                result.payload = json.dumps(reply).encode("utf-8")
                result.content_type = "application/json"
        except Exception as e:
            gf.log(gf.ERROR, _traceback())
            result.error = gf._error_text("%s: %s" % (type(e).__name__, e) if str(e)
                                          else type(e).__name__, chan.max_frame)
        try:
            chan.send(wire.Frame(result=result))
        except gf._FrameTooLarge:
            # A result the runtime would refuse (ending this instance): its error instead.
            try:
                chan.send(wire.Frame(result=wire.Result(
                    id=inv.id, error=b"result of %d bytes exceeds max_frame_bytes (%d)"
                    % (len(result.payload), chan.max_frame))))
            except gf._FrameTooLarge:  # even that (a tiny max_frame): end, as the C++ SDK
                return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
