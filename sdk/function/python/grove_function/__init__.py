"""Grove's Python function SDK: what a user function (a Greengrass "Lambda" on the
device) calls when function_runtime runs it with ``runtime: python3``.

The runner (``python3 -m grove_function.runner module.function``) imports the handler
and calls ``handler(event, context)`` per work item; the verbs below talk to the runtime
over the instance's socket (plugins/function_runtime/README.md, "IPC"): length-prefixed
``grove.fn.Frame`` messages of function.proto, encoded and decoded by ``_wire`` (pure
Python: a worker does not import protobuf). ``greengrasssdk`` wraps these verbs in
Greengrass' client shape. See sdk/function/python/README.md.

The verbs share the instance's one socket: call them from the handler's thread.
"""

import _thread
import collections
import os
import select
import struct
import sys
import time

from . import _wire

__all__ = [
    "Error", "Context", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "publish", "publish_nowait",
    "invoke", "get_thing_shadow", "update_thing_shadow", "delete_thing_shadow", "log",
    "infer", "InferenceError",
]

# Log levels of log(), as function.proto's Log.level.
DEBUG, INFO, WARN, ERROR, FATAL = 0, 1, 2, 3, 4

_LENGTH = struct.Struct(">I")


class Error(Exception):
    """A verb failed: the runtime's or the target's error text is the message."""


class _FrameTooLarge(Error):
    """A frame over the runtime's max_frame_bytes, not sent: the verb's error (as the C++
    SDK words it)."""

    def __init__(self, size, limit):
        super().__init__("too_large: the request's frame of %d bytes exceeds the limit of %d "
                         "(the runtime's max_frame_bytes)" % (size, limit))
        self.size = size
        self.limit = limit


class InferenceError(Error):
    """infer() failed: ``code`` is the error's code (not_authorized, malformed, queue_full,
    no_route, invalid_state, too_large, timeout, ...), ``message`` ml_inference's or the
    runtime's text (a malformed request names the tensor and what was expected)."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message) if code else message)
        self.code = code
        self.message = message


class _ClientContext:
    """Greengrass' ``context.client_context``: ``custom['subject']`` is the topic."""

    def __init__(self, subject):
        self.custom = {"subject": subject}
        self.client = None
        self.env = None


class Context:
    """What the handler learns about the work item it is given."""

    __slots__ = ("function_name", "subject", "source", "invocation_id", "content_type",
                 "event", "_deadline", "client_context")

    def __init__(self, function_name, subject, source, invocation_id, content_type, event,
                 remaining_ms):
        #: The function's name.
        self.function_name = function_name
        #: The MQTT topic the message came on; "" for a direct invocation.
        self.subject = subject
        #: Who sent it: device:<thing>, cloud, shadow, function:<name>, grovectl, ...
        self.source = source
        #: Unique per work item.
        self.invocation_id = invocation_id
        #: The payload's content type as sent.
        self.content_type = content_type
        #: True when nobody waits for the return value (an event, a routed message).
        self.event = event
        self._deadline = time.monotonic() + remaining_ms / 1000.0
        #: Greengrass' shape: client_context.custom["subject"].
        self.client_context = _ClientContext(subject)

    @property
    def aws_request_id(self):
        """Greengrass' name for invocation_id."""
        return self.invocation_id

    def get_remaining_time_in_millis(self):
        """Milliseconds left before the runtime ends the instance (timeoutInSeconds)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _Channel:
    """The instance's socket to the runtime (descriptor GROVE_FUNCTION_FD): frames are a
    4-byte big-endian length, then the serialized Frame (the kernel's framing)."""

    def __init__(self, fd, max_frame, name):
        self.fd = fd
        self.max_frame = max_frame
        self.name = name
        self.next_id = 0
        self._buf = bytearray()
        # Invokes the runtime sent ahead (Hello.pipeline) that arrived while a verb
        # waited for its reply: the runner runs them next, in order.
        self.invokes = collections.deque()
        # The runtime took back the Invokes it sent ahead (Recall): none of those held runs.
        self.recall = False
        # Whole frames only: the status thread (start_status) writes between the others.
        # _thread, not threading: nothing more to import at start.
        self._send_lock = _thread.allocate_lock()

    def start_status(self, interval):
        """A pinned instance's status reports (Hello.status, statusTimeoutInSeconds):
        a Status frame every `interval` seconds from a thread of its own, so a handler
        that runs long does not hold them back. It ends when a write fails (the runtime
        is gone, which the main loop notices by itself) or with the process."""
        data = _wire.Frame(status=_wire.Status()).encode()

        def loop():
            while True:
                time.sleep(interval)
                try:
                    self.send_bytes(data)
                except OSError:
                    return

        _thread.start_new_thread(loop, ())

    def send(self, frame):
        """Sends `frame`; raises _FrameTooLarge, sending nothing, for one over the
        runtime's max_frame_bytes (the runtime would end the instance)."""
        data = frame.encode()
        if len(data) > self.max_frame:
            raise _FrameTooLarge(len(data), self.max_frame)
        self.send_bytes(data)

    def send_bytes(self, data):
        out = memoryview(_LENGTH.pack(len(data)) + data)
        with self._send_lock:
            while out:
                out = out[os.write(self.fd, out):]

    def _held(self):
        """The next complete Frame read already, or None."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (n,) = _LENGTH.unpack_from(buf)
        if n > self.max_frame:
            raise Error("the runtime sent a frame of %d bytes (max %d)" % (n, self.max_frame))
        if len(buf) < 4 + n:
            return None
        try:
            frame = _wire.Frame.decode(bytes(buf[4:4 + n]))
        except _wire.DecodeError as e:  # the runner ends the instance
            raise Error("the runtime sent a malformed frame: %s" % e) from None
        del buf[:4 + n]
        return frame

    def read(self):
        """The next Frame, or None once the runtime closed the socket."""
        while True:
            frame = self._held()
            if frame is not None:
                return frame
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self._buf += chunk

    def recalled(self):
        """Whether the runtime took back the Invokes it sent ahead (Recall), with every
        frame that has arrived read first, without waiting: it retired this instance
        while the handler ran (a narrowed resource grant, a new definition), and those
        items must run in a new instance, not here after the current one."""
        while not self.recall:
            frame = self._held()
            if frame is not None:
                body = frame.which("body")
                if body == "invoke":
                    self.invokes.append(frame)
                elif body == "recall":
                    self.recall = True
                continue
            if not select.select((self.fd,), (), (), 0)[0]:
                break
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break  # closed: the runner's next read says so
            self._buf += chunk
        return self.recall

    def await_reply(self, kind, id_field, wanted):
        """Reads frames until the reply `kind` whose `id_field` is `wanted` (an Invoke
        sent ahead is kept for the runner; a late reply of a verb that gave up is
        skipped)."""
        while True:
            frame = self.read()
            if frame is None:
                raise Error("the runtime closed the socket")
            body = frame.which("body")
            if body == "invoke":
                self.invokes.append(frame)
            elif body == "recall":
                self.recall = True
            elif body == kind:
                reply = getattr(frame, kind)
                if getattr(reply, id_field) == wanted:
                    return reply

    def take_id(self):
        self.next_id += 1
        return self.next_id


_channel = None


def _chan():
    global _channel
    if _channel is None:
        fd = int(os.environ.get("GROVE_FUNCTION_FD", "-1"))
        if fd < 0:
            raise Error("GROVE_FUNCTION_FD is not set: function_runtime starts this program")
        _channel = _Channel(fd, int(os.environ.get("GROVE_FUNCTION_MAX_FRAME", "4194304")),
                            os.environ.get("GROVE_FUNCTION_NAME", ""))
    return _channel


def _bytes(value):
    """A payload as bytes: bytes-like as is, str as UTF-8, anything else as JSON."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    import json  # here: a function that never sends JSON does not pay for its import
    return json.dumps(value).encode("utf-8")


def publish(topic, payload, qos=0, content_type=""):
    """Publishes `payload` (bytes, str, or a value sent as JSON) on MQTT topic `topic`
    through the group's subscription table (message_manager mm-3) as function:<name>.
    Returns how many kinds of target took it (0: no subscription routes it); raises
    Error when the runtime or message_manager refuses it."""
    c = _chan()
    ack_id = c.take_id()
    c.send(_wire.Frame(publish=_wire.Publish(topic=topic, payload=_bytes(payload), qos=qos,
                                         content_type=content_type, ack_id=ack_id)))
    ack = c.await_reply("publish_ack", "ack_id", ack_id)
    if ack.error:
        raise Error(ack.error)
    return ack.targets


def publish_nowait(topic, payload, qos=0):
    """Like publish() without waiting for where it went; the runtime ends an instance
    with more than max_pending_frames publishes in flight."""
    _chan().send(_wire.Frame(publish=_wire.Publish(topic=topic, payload=_bytes(payload), qos=qos)))


def _call(frame, call_id):
    c = _chan()
    c.send(frame)
    reply = c.await_reply("call_reply", "call_id", call_id)
    if reply.error:
        raise Error(reply.error)
    return reply.payload


# Not re: its import would cost every worker's cold start.
_SHADOW_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-")


def _shadow_name(name, max_bytes):
    return (isinstance(name, str) and 0 < len(name) <= max_bytes
            and all(c in _SHADOW_CHARS for c in name))


def _check_names(function=None, thing=None, shadow=""):
    """Raises Error("malformed: ...") for a name the runtime refuses (the rules of
    sdk/function/cpp/include/grove/function/names.hpp, which the runtime and the C++ SDK
    both use), so nothing is sent."""
    if function is not None and (not isinstance(function, str) or not function
                                 or any(c in function for c in "/+#\0")):
        raise Error("malformed: the function name is not one topic level "
                    "(not empty, no '/', '+', '#')")
    if thing is not None and not _shadow_name(thing, 128):
        raise Error("malformed: the thing name is not 1-128 of a-z, A-Z, 0-9, ':', '_', '-'")
    if shadow and not _shadow_name(shadow, 64):
        raise Error("malformed: the shadow name is not 1-64 of a-z, A-Z, 0-9, ':', '_', '-'")


def invoke(name, payload, event=False, timeout_ms=0, content_type=""):
    """Invokes function `name` with `payload`: its reply as bytes, or b"" once an event
    (event=True) was queued. Raises Error with the target's error (it raised, timed out,
    does not exist...). timeout_ms 0: the runtime's call_timeout_ms."""
    _check_names(function=name)
    call_id = _chan().take_id()
    return _call(_wire.Frame(call=_wire.Call(call_id=call_id, function=name,
                                         payload=_bytes(payload), event=event,
                                         content_type=content_type, timeout_ms=timeout_ms)),
                 call_id)


def _shadow(op, thing, shadow, document, timeout_ms):
    _check_names(thing=thing, shadow=shadow)
    call_id = _chan().take_id()
    return _call(_wire.Frame(shadow_call=_wire.ShadowCall(
        call_id=call_id, op=op, thing=thing, shadow=shadow or "",
        payload=b"" if document is None else _bytes(document), timeout_ms=timeout_ms)),
                 call_id)


def get_thing_shadow(thing, shadow="", timeout_ms=0):
    """The Device Shadow of `thing` (classic, or named `shadow`): the accepted document
    (bytes, JSON). Raises Error: "rejected: {...404...}", a timeout, or no route to the
    shadow service. The group's table must route the request to the shadow service and
    its .../accepted and .../rejected back to this function."""
    return _shadow("get", thing, shadow, None, timeout_ms)


def update_thing_shadow(thing, document, shadow="", timeout_ms=0):
    """Updates the shadow with `document` (a JSON object: a dict, or its text); the
    accepted document, or Error as get_thing_shadow."""
    return _shadow("update", thing, shadow, document, timeout_ms)


def delete_thing_shadow(thing, shadow="", timeout_ms=0):
    """Deletes the shadow; the accepted reply, or Error as get_thing_shadow."""
    return _shadow("delete", thing, shadow, None, timeout_ms)


def _numpy():
    """numpy, or None when it is not installed (infer() then takes and gives bytes)."""
    try:
        import numpy
        return numpy
    except ImportError:
        return None


# ml.proto's DataType by name, and back.
_DTYPES = {"float32": 1, "uint8": 2}
_DTYPE_NAMES = {1: "float32", 2: "uint8"}


def _tensor(t, name, value, np):
    """Fills ml.Tensor `t` from a numpy array or a (dtype, shape, data) tuple; returns it."""
    t.name = name
    if np is not None and isinstance(value, np.ndarray):
        if value.dtype != np.uint8:
            value = value.astype("<f4", copy=False)  # the models compute in float32
        value = np.ascontiguousarray(value)
        t.dtype = 2 if value.dtype == np.uint8 else 1
        t.shape.extend(int(d) for d in value.shape)
        t.data = value.tobytes()
        return t
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise TypeError("infer: input '%s' must be a numpy array or (dtype, shape, data)"
                        % name)
    dtype, shape, data = value
    dtype = str(dtype)
    if dtype not in _DTYPES:
        raise TypeError("infer: input '%s': dtype %r, expected float32 or uint8" % (name, dtype))
    t.dtype = _DTYPES[dtype]
    t.shape.extend(int(d) for d in shape)
    if isinstance(data, (bytes, bytearray, memoryview)):
        t.data = bytes(data)
    elif dtype == "float32":
        t.data = struct.pack("<%df" % len(data), *data)
    else:
        t.data = bytes(data)
    return t


def infer(model, inputs=None, image=None, top_k=0, timeout_ms=0):
    """Runs ML model `model` (a group resource this function's resourceAccessPolicies
    grant) through ml_inference, on `inputs` ({name: numpy array or (dtype, shape,
    data)}, dtype float32 or uint8; other numpy dtypes are sent as float32) or on `image`
    (PNG, JPEG or BMP bytes, for the model's preprocessing). Returns ``{"outputs": {name:
    numpy array, or (dtype, shape, bytes) without numpy}, "top": [{"index", "label",
    "score"}...], "version": str, "batch_size": int}``. Raises InferenceError with the
    code and message; a request over the runtime's max_frame_bytes is refused here
    (too_large) before it is sent. timeout_ms 0: the runtime's call_timeout_ms."""
    np = _numpy()
    req = _wire.InferRequest(image=b"" if image is None else bytes(image), top_k=int(top_k))
    for name, value in (inputs or {}).items():
        req.inputs.append(_tensor(_wire.Tensor(), name, value, np))
    c = _chan()
    call_id = c.take_id()
    frame = _wire.Frame(infer_call=_wire.InferCall(call_id=call_id, model=model,
                                               request=req.encode(), timeout_ms=timeout_ms))
    try:
        c.send(frame)
    except _FrameTooLarge as e:
        raise InferenceError("too_large", "the infer request is %d bytes, over the runtime's "
                             "max_frame_bytes (%d)" % (e.size, e.limit)) from None
    reply = c.await_reply("call_reply", "call_id", call_id)
    if reply.error or reply.error_code:
        raise InferenceError(reply.error_code, reply.error)
    try:
        resp = _wire.InferResponse.decode(reply.payload)
    except _wire.DecodeError as e:
        raise InferenceError("malformed", "the inference reply does not parse: %s" % e) from None
    outputs = {}
    for t in resp.outputs:
        dtype = _DTYPE_NAMES.get(t.dtype, "float32")
        if np is not None:
            # bytearray: a writable array (frombuffer of bytes is read-only).
            outputs[t.name] = np.frombuffer(bytearray(t.data), dtype="<f4" if dtype == "float32"
                                            else np.uint8).reshape(tuple(t.shape))
        else:
            outputs[t.name] = (dtype, tuple(t.shape), bytes(t.data))
    top = [{"index": l.index, "label": l.label, "score": l.score} for l in resp.top]
    return {"outputs": outputs, "top": top, "version": resp.version,
            "batch_size": resp.batch_size}


def _escape_surrogates(e):
    """Error handler "grove_text": a lone surrogate that stands for an undecodable byte
    (os.fsdecode, surrogateescape: U+DC80..U+DCFF) as \\xNN, that byte, as the C++ SDK
    and the runtime write bytes that are not UTF-8; any other as \\udNNN."""
    text = e.object[e.start:e.end]
    return "".join("\\x%02x" % (ord(c) - 0xDC00) if 0xDC80 <= ord(c) <= 0xDCFF
                   else "\\u%04x" % ord(c) for c in text), e.end


def _text(s):
    """`s` as the UTF-8 bytes of a frame's text (Hello.error, Result.error, Log.text):
    text a handler controls may hold lone surrogates, escaped here (_escape_surrogates)
    so that the encoder cannot raise outside the handler's try and end the worker
    without a Result."""
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        pass
    import codecs  # registered when first needed
    try:
        codecs.lookup_error("grove_text")
    except LookupError:
        codecs.register_error("grove_text", _escape_surrogates)
    return s.encode("utf-8", "grove_text")


# Longest error text a Result carries (or half of max_frame_bytes, if less), as in the C++
# SDK: an exception's message is for a person, and one of any size must not make the
# Result too large for the runtime.
_MAX_ERROR_BYTES = 16 << 10


def _error_text(s, max_frame):
    """`s` as a Result's or Hello's error: _text(s) cut to _MAX_ERROR_BYTES (or half the
    frame limit), not inside a UTF-8 sequence, and the cut said: "[N bytes, cut]"."""
    data = _text(s)
    cap = min(_MAX_ERROR_BYTES, max_frame // 2)
    if len(data) <= cap:
        return data
    tail = b" [%d bytes, cut]" % len(data)
    keep = cap - min(cap, len(tail))
    while keep > 0 and data[keep] & 0xC0 == 0x80:
        keep -= 1
    return data[:keep] + tail


def log(level, text):
    """Writes a line to the function's log (<write_dir>/logs/functions/<name>.log)."""
    try:
        c = _chan()
    except Error:  # not under the runtime (a unit test of the handler): stderr
        sys.stderr.write(text + "\n")
        return
    try:
        c.send(_wire.Frame(log=_wire.Log(level=level, text=_text(text))))
    except _FrameTooLarge:  # the line to stderr, which the runtime writes to the log too
        sys.stderr.write(_text(text).decode("utf-8") + "\n")  # \xNN, as in a Log frame
