"""The protobuf wire format of the worker's frames, in pure Python (stdlib only).

A ``runtime: python3`` worker reads and writes function_runtime's frames
(plugins/function_runtime/function.proto) and, for infer(), ml_inference's
InferRequest/InferResponse (plugins/ml_inference/ml.proto). Importing Debian's protobuf
extension to do so was most of a worker's cold start (~21 ms of CPU of ~28 over a bare
python3), so the messages a worker uses are declared here, in a table of field
numbers and types (``_PROTO``), and encoded and decoded by the small codec below. It
knows the types these messages use: varints (uint32, uint64, int64, bool, enum),
float (fixed32), length-delimited (string, bytes, nested messages), repeated fields
(numbers packed, as proto3 writes them; both forms read) and one-ofs; a field of
another type in the table is refused at import. Unknown fields of every wire type are
skipped as protobuf skips them (groups included).

The decoder refuses what protobuf's parser refuses (a truncated varint or field, a
length past the end or written in over 5 bytes or of 2 GiB, field number 0, wire types 6 and 7, an unmatched end group,
invalid UTF-8 in a string) and also a known field sent with the wrong wire type
(protobuf would keep it as an unknown field; from the runtime it can only mean a
function.proto the SDK does not match): each raises DecodeError saying what and
where. ``sdk/function/python/tests/wire_test.py`` checks the table against the
.proto descriptors and the codec against protoc's classes both ways.
"""

import operator
import struct

__all__ = ["DecodeError", "Message"]


class DecodeError(ValueError):
    """Bytes that are not a valid encoding of the message."""


# How each .proto scalar type is carried: its wire type and how a varint reads.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1

# The scalar types the table uses: (wire type, default, (min, max) for integers).
# (Another type, e.g. sint32's zigzag or a fixed64, needs its reading and writing added
# here and in _from_varint/_write_number, and a field of it in wire_test's cross-check.)
_SCALARS = {
    "uint32": (_VARINT, 0, (0, _U32)),
    "uint64": (_VARINT, 0, (0, _U64)),
    "int64": (_VARINT, 0, (-(1 << 63), (1 << 63) - 1)),
    "enum": (_VARINT, 0, (-(1 << 31), (1 << 31) - 1)),
    "bool": (_VARINT, False, None),
    "float": (_FIXED32, 0.0, None),
    "string": (_LEN, "", None),
    "bytes": (_LEN, b"", None),
}
_FIXED_FORMATS = {"float": "<f"}

# The messages a worker sends and reads, as in the .proto files: name -> fields, each
# (number, name, type[, oneof]); a type is a scalar above, a message of this table, or
# "repeated <type>". tests/wire_test.py fails when this drifts from the descriptors.
_PROTO = {
    # function.proto (package grove.fn): the IPC frames.
    "Hello": ((1, "token", "string"), (2, "protocol", "uint32"), (3, "error", "bytes"),
              (4, "pipeline", "uint32"), (5, "recall", "bool"), (6, "status", "bool")),
    "Invoke": ((1, "id", "uint64"), (2, "payload", "bytes"), (3, "subject", "string"),
               (4, "source", "string"), (5, "content_type", "string"),
               (6, "invocation_id", "string"), (7, "remaining_ms", "uint64"),
               (8, "event", "bool")),
    "Result": ((1, "id", "uint64"), (2, "payload", "bytes"), (3, "content_type", "string"),
               (4, "error", "bytes")),
    "Publish": ((1, "topic", "string"), (2, "payload", "bytes"), (3, "qos", "uint32"),
                (4, "content_type", "string"), (5, "ack_id", "uint64")),
    "PublishAck": ((1, "ack_id", "uint64"), (2, "targets", "uint32"), (3, "error", "string")),
    "Call": ((1, "call_id", "uint64"), (2, "function", "string"), (3, "payload", "bytes"),
             (4, "event", "bool"), (5, "content_type", "string"), (6, "timeout_ms", "uint64")),
    "CallReply": ((1, "call_id", "uint64"), (2, "payload", "bytes"), (3, "error", "string"),
                  (4, "content_type", "string"), (5, "error_code", "string")),
    "ShadowCall": ((1, "call_id", "uint64"), (2, "thing", "string"), (3, "shadow", "string"),
                   (4, "op", "string"), (5, "payload", "bytes"), (6, "timeout_ms", "uint64")),
    "InferCall": ((1, "call_id", "uint64"), (2, "model", "string"), (3, "request", "bytes"),
                  (4, "timeout_ms", "uint64")),
    "Log": ((1, "level", "uint32"), (2, "text", "bytes")),
    "Recall": (),
    "Recalled": (),
    "Status": (),
    "Frame": ((1, "hello", "Hello", "body"), (2, "invoke", "Invoke", "body"),
              (3, "result", "Result", "body"), (4, "publish", "Publish", "body"),
              (5, "publish_ack", "PublishAck", "body"), (6, "call", "Call", "body"),
              (7, "call_reply", "CallReply", "body"), (8, "log", "Log", "body"),
              (9, "shadow_call", "ShadowCall", "body"),
              (10, "infer_call", "InferCall", "body"), (11, "recall", "Recall", "body"),
              (12, "recalled", "Recalled", "body"), (13, "status", "Status", "body")),
    # ml.proto (package grove.ml): infer()'s request and response.
    "Tensor": ((1, "name", "string"), (2, "dtype", "enum"), (3, "shape", "repeated int64"),
               (4, "data", "bytes")),
    "InferRequest": ((1, "inputs", "repeated Tensor"), (2, "image", "bytes"),
                     (3, "top_k", "uint32")),
    "Label": ((1, "index", "uint32"), (2, "label", "string"), (3, "score", "float")),
    "InferResponse": ((1, "model", "string"), (2, "version", "string"),
                      (3, "outputs", "repeated Tensor"), (4, "top", "repeated Label"),
                      (5, "batch_size", "uint32")),
}

# Protobuf's own limit on nested messages and groups.
_MAX_DEPTH = 100


# How the decoder reads a field (_Field.kind): one small integer to branch on.
(_K_UINT64, _K_UINT32, _K_BOOL, _K_INT64, _K_ENUM, _K_FIXED, _K_STRING, _K_BYTES,
 _K_MESSAGE) = range(9)
_VARINT_KINDS = {"uint64": _K_UINT64, "uint32": _K_UINT32, "bool": _K_BOOL,
                 "int64": _K_INT64, "enum": _K_ENUM}


class _Field:
    __slots__ = ("number", "name", "type", "repeated", "oneof", "message", "wire", "default",
                 "range", "tag", "fmt", "size", "kind", "others")

    def __init__(self, number, name, type_, oneof):
        self.number = number
        self.name = name
        self.repeated = type_.startswith("repeated ")
        self.type = type_[9:] if self.repeated else type_
        self.oneof = oneof
        self.message = None  # the class, for a message field (set once all exist)
        self.others = ()  # the other members' names, for a member of a one-of
        self.wire, self.default, self.range = _SCALARS.get(self.type, (_LEN, None, None))
        self.fmt = _FIXED_FORMATS.get(self.type)
        self.size = 4 if self.wire == _FIXED32 else 8
        self.kind = (_VARINT_KINDS[self.type] if self.wire == _VARINT else
                     _K_FIXED if self.fmt else _K_STRING if self.type == "string" else
                     _K_BYTES if self.type == "bytes" else _K_MESSAGE)
        # Numeric repeated fields are written packed (proto3's default).
        wire = _LEN if self.repeated and self.wire != _LEN else self.wire
        self.tag = _varint_bytes(number << 3 | wire)


def _write_varint(n, out):
    """Appends non-negative `n` to bytearray `out` as a varint; returns `out`."""
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return out


def _varint_bytes(n):
    return bytes(_write_varint(n, bytearray()))


def _read_varint(data, pos, end):
    """(value, pos after it): at most 10 bytes, bits past 64 dropped (as protobuf)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated varint at byte %d" % pos)
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than 10 bytes at byte %d" % (pos - 10))


def _read_varint5(data, pos, end, what):
    """(value, pos after it) of a varint of at most 5 bytes, as protobuf reads a tag or a
    size (a longer encoding, even of a small number, is refused); `what` names it."""
    v = 0
    for shift in (0, 7, 14, 21, 28):
        if pos >= end:
            raise DecodeError("truncated varint at byte %d" % pos)
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, pos
    raise DecodeError("%s longer than 5 bytes at byte %d" % (what, pos - 5))


def _read_length(data, pos, end):
    """(length, pos after it) of a length-delimited field, as protobuf reads a size: at
    most 5 bytes, below 2 GiB."""
    n, after = _read_varint5(data, pos, end, "length")
    if n >> 31:
        raise DecodeError("length %d at byte %d: past 2 GiB" % (n, pos))
    return n, after


def _skip(data, pos, end, number, wire, depth):
    """pos after an unknown field's value (wire type `wire`), as protobuf skips it."""
    if wire == _VARINT:
        return _read_varint(data, pos, end)[1]
    if wire == _FIXED64 or wire == _FIXED32:
        pos += 8 if wire == _FIXED64 else 4
        if pos > end:
            raise DecodeError("field %d: truncated fixed%d" % (number,
                                                               64 if wire == _FIXED64 else 32))
        return pos
    if wire == _LEN:
        n, pos = _read_length(data, pos, end)
        if n > end - pos:
            raise DecodeError("field %d: length %d past the end (%d bytes left)"
                              % (number, n, end - pos))
        return pos + n
    if wire == 3:  # start group: its fields until the matching end group
        if depth >= _MAX_DEPTH:
            raise DecodeError("groups nested deeper than %d" % _MAX_DEPTH)
        while True:
            if pos >= end:
                raise DecodeError("field %d: group without its end" % number)
            inner, inner_wire, pos = _read_tag(data, pos, end)
            if inner_wire == 4:
                if inner != number:
                    raise DecodeError("field %d: group ended by field %d" % (number, inner))
                return pos
            pos = _skip(data, pos, end, inner, inner_wire, depth + 1)
    if wire == 4:
        raise DecodeError("field %d: end group without its start" % number)
    raise DecodeError("field %d: invalid wire type %d" % (number, wire))


def _read_tag(data, pos, end):
    """(field number, wire type, pos after the tag): as protobuf reads a tag, a varint of
    at most 5 bytes whose bits past 32 are dropped; field number 0 is refused."""
    tag, pos = _read_varint5(data, pos, end, "tag")
    tag &= _U32
    if tag >> 3 == 0:
        raise DecodeError("invalid tag %d (field number 0) before byte %d" % (tag, pos))
    return tag >> 3, tag & 7, pos


def _from_varint(kind, v):
    """A varint's value as the field's type reads it (protobuf's truncations)."""
    if kind == _K_UINT64:
        return v
    if kind == _K_UINT32:
        return v & _U32
    if kind == _K_BOOL:
        return v != 0
    if kind == _K_INT64:
        return v - (1 << 64) if v >> 63 else v
    v &= _U32  # an enum: an int32
    return v - (1 << 32) if v >> 31 else v


def _read_number(f, data, pos, end):
    """(value, pos after it) of a varint or fixed-size field."""
    if f.wire == _VARINT:
        v, pos = _read_varint(data, pos, end)
        return _from_varint(f.kind, v), pos
    stop = pos + f.size
    if stop > end:
        raise DecodeError("%s (field %d): truncated %s" % (f.name, f.number, f.type))
    return struct.unpack_from(f.fmt, data, pos)[0], stop


def _decode_into(msg, data, pos, end, depth):
    cls = type(msg)
    fields = cls._by_number
    values = msg.__dict__  # the fields set; the others read as the class's defaults
    while pos < end:
        b = data[pos]
        if 8 <= b < 0x80:  # a one-byte tag: every field of these messages
            number = b >> 3
            wire = b & 7
            pos += 1
        else:
            number, wire, pos = _read_tag(data, pos, end)
        f = fields.get(number)
        if f is None:
            pos = _skip(data, pos, end, number, wire, depth)
            continue
        if wire != f.wire:
            if not (f.repeated and wire == _LEN):
                raise DecodeError("%s.%s (field %d): wire type %d, expected %d"
                                  % (cls.__name__, f.name, number, wire, f.wire))
            # Packed numbers.
            n, pos = _read_length(data, pos, end)
            if n > end - pos:
                raise DecodeError("%s.%s (field %d): length %d past the end (%d bytes left)"
                                  % (cls.__name__, f.name, number, n, end - pos))
            stop = pos + n
            items = values[f.name]
            while pos < stop:
                v, pos = _read_number(f, data, pos, stop)
                items.append(v)
            continue
        kind = f.kind
        if wire == _LEN:
            b = data[pos] if pos < end else 0x80
            if b < 0x80:
                n = b
                pos += 1
            else:
                n, pos = _read_length(data, pos, end)
            if n > end - pos:
                raise DecodeError("%s.%s (field %d): length %d past the end (%d bytes left)"
                                  % (cls.__name__, f.name, number, n, end - pos))
            stop = pos + n
            if kind == _K_BYTES:
                value = bytes(data[pos:stop])
            elif kind == _K_STRING:
                try:
                    value = str(data[pos:stop], "utf-8")
                except UnicodeDecodeError:
                    raise DecodeError("%s.%s (field %d): invalid UTF-8"
                                      % (cls.__name__, f.name, number)) from None
            else:
                if depth >= _MAX_DEPTH:
                    raise DecodeError("messages nested deeper than %d" % _MAX_DEPTH)
                if f.repeated:
                    value = _decode_into(f.message(), data, pos, stop, depth + 1)
                else:
                    # A message field seen twice is merged, as protobuf does.
                    value = values.get(f.name)
                    if value is None:
                        value = f.message()
                    _decode_into(value, data, pos, stop, depth + 1)
            pos = stop
        elif wire == _VARINT:
            b = data[pos] if pos < end else 0x80
            if b < 0x80 and kind <= _K_BOOL:  # one byte, read as it is
                value = b if kind != _K_BOOL else b != 0
                pos += 1
            else:
                value, pos = _read_varint(data, pos, end)
                value = _from_varint(kind, value)
        else:
            value, pos = _read_number(f, data, pos, end)
        if f.repeated:
            values[f.name].append(value)
            continue
        for other in f.others:  # one member of a one-of at a time
            if other in values:
                del values[other]
        values[f.name] = value
    return msg


def _write_number(f, v, out):
    if f.wire == _VARINT:
        if f.range is None:  # bool
            out.append(1 if v else 0)
            return
        v = operator.index(v)
        lo, hi = f.range
        if not lo <= v <= hi:
            raise ValueError("%s: %d is out of range for %s" % (f.name, v, f.type))
        # int64, enum: a negative one is ten bytes, as protobuf writes it.
        _write_varint(v & _U64 if v < 0 else v, out)
        return
    try:
        out += struct.pack(f.fmt, v)  # float
    except OverflowError:  # past float's range: protobuf stores +-inf
        out += struct.pack(f.fmt, float("inf") if v > 0 else float("-inf"))


def _write_len(data, out):
    if type(data) is memoryview:  # its len() counts items, not bytes
        data = data.cast("B") if data.c_contiguous else data.tobytes()
    _write_varint(len(data), out)
    out += data


def _check_message(f, v):
    # pb2 refuses a message of another type; written, it would be read as this field's.
    if type(v) is not f.message:
        raise TypeError("%s: a %s, not %s" % (f.name, f.message.__name__, type(v).__name__))


def _encode_into(msg, out):
    cls = type(msg)
    values = msg.__dict__  # only the fields set: the others are defaults, not written
    try:
        names = values if len(values) < 2 else sorted(values, key=cls._order.__getitem__)
        fields = [cls._by_name[name] for name in names]
    except KeyError as e:  # an attribute set that is no field (a typo)
        raise AttributeError("%s has no field %s" % (cls.__name__, e)) from None
    for f in fields:
        v = values[f.name]
        if f.repeated:
            if not v:
                continue
            if f.message is not None:
                for item in v:
                    _check_message(f, item)
                    out += f.tag
                    _write_len(_encode_into(item, bytearray()), out)
            elif f.wire == _LEN:
                for item in v:
                    if not isinstance(item, str if f.type == "string" else
                                      (bytes, bytearray, memoryview)):
                        raise TypeError("%s: an item %s" % (f.name, type(item).__name__))
                    out += f.tag
                    _write_len(item.encode("utf-8") if f.type == "string" else item, out)
            else:
                packed = bytearray()
                for item in v:
                    _write_number(f, item, packed)
                out += f.tag
                _write_len(packed, out)
            continue
        if v is None:  # a message field, or a one-of member, not set
            if f.message is None and f.oneof is None:  # pb2 refuses None for a scalar
                raise TypeError("%s: None for a %s" % (f.name, f.type))
            continue
        if f.message is not None:
            _check_message(f, v)
            out += f.tag
            _write_len(_encode_into(v, bytearray()), out)
        elif f.wire == _LEN:
            if not v and f.oneof is None:
                continue
            if f.type == "string":
                if not isinstance(v, str):
                    raise TypeError("%s: a str, not %s" % (f.name, type(v).__name__))
                v = v.encode("utf-8")
            elif not isinstance(v, (bytes, bytearray, memoryview)):
                raise TypeError("%s: bytes, not %s" % (f.name, type(v).__name__))
            out += f.tag
            _write_len(v, out)
        else:
            # proto3: a zero is not written (-0.0 is: protobuf compares the bits).
            if not v and f.oneof is None and (f.wire == _VARINT or struct.pack(
                    "<d", v) == b"\0" * 8):
                continue
            out += f.tag
            _write_number(f, v, out)
    return out


class Message:
    """A message of the table: its fields as attributes (scalars at their proto3
    defaults, repeated fields as lists, message fields None until set), set by keyword
    at construction or afterwards. An instance holds only the fields set (the defaults
    are the class's), which keeps making, reading and writing one cheap: the worker
    does all three per work item."""

    _fields = ()
    _by_number = {}
    _by_name = {}
    _order = {}
    _oneofs = {}
    _repeated = ()

    def __init__(self, **values):
        fields = self.__dict__
        for name in self._repeated:
            fields[name] = []
        if values:
            if not self._by_name.keys() >= values.keys():
                raise AttributeError("%s has no field %s" % (type(self).__name__, ", ".join(
                    repr(n) for n in values if n not in self._by_name)))
            fields.update(values)

    def encode(self):
        """The message's bytes (fields in number order, as protobuf writes them)."""
        return bytes(_encode_into(self, bytearray()))

    @classmethod
    def decode(cls, data):
        """A message of this type from `data` (bytes-like); raises DecodeError."""
        return _decode_into(cls(), data, 0, len(data), 0)

    def which(self, oneof):
        """The name of the set field of one-of `oneof`, or None."""
        for f in self._oneofs[oneof]:
            if getattr(self, f.name) is not None:
                return f.name
        return None

    def __eq__(self, other):
        return type(other) is type(self) and all(
            getattr(self, f.name) == getattr(other, f.name) for f in self._fields)

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (f.name, getattr(self, f.name)) for f in self._fields
            if f.name in self.__dict__))


def _make_classes():
    classes = {}
    for name, specs in _PROTO.items():
        fields = tuple(sorted((_Field(*spec[:3], spec[3] if len(spec) > 3 else None)
                               for spec in specs), key=lambda f: f.number))
        oneofs = {}
        for f in fields:
            if f.oneof is not None:
                oneofs.setdefault(f.oneof, []).append(f)
        for f in fields:
            if f.oneof is not None:
                f.others = tuple(o.name for o in oneofs[f.oneof] if o is not f)
        attrs = {f.name: None if f.repeated or f.oneof is not None else f.default
                 for f in fields}  # the defaults (a repeated field's list is made per instance)
        attrs.update({
            "_fields": fields,
            "_by_number": {f.number: f for f in fields},
            "_by_name": {f.name: f for f in fields},
            "_order": {f.name: f.number for f in fields},
            "_oneofs": {k: tuple(v) for k, v in oneofs.items()},
            "_repeated": tuple(f.name for f in fields if f.repeated),
            "__module__": __name__,
        })
        classes[name] = type(name, (Message,), attrs)
    for cls in classes.values():
        for f in cls._fields:
            f.message = classes.get(f.type)
            if f.message is None and f.type not in _SCALARS:
                raise TypeError("%s.%s: unknown type %s" % (cls.__name__, f.name, f.type))
    return classes


globals().update(_make_classes())
__all__ += list(_PROTO)
