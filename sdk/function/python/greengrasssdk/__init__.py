"""Greengrass' core SDK shape on Grove: ``greengrasssdk.client('iot-data')`` and
``greengrasssdk.client('lambda')``, as a Greengrass v1 Lambda function calls them,
implemented on the grove_function verbs (sdk/function/python/README.md)."""

import grove_function as _gf

__all__ = ["client", "IoTDataPlane", "Lambda", "ML", "ShadowError", "InvocationException",
           "InferenceError"]

#: infer()'s error: ``code`` and ``message`` (grove_function.InferenceError).
InferenceError = _gf.InferenceError


class ShadowError(Exception):
    """A shadow request was rejected (the message holds the shadow service's JSON error),
    timed out, or had no route to the shadow service."""


class InvocationException(Exception):
    """An invoke() with an InvocationType other than RequestResponse or Event."""


class StreamingBody:
    """The ``Payload`` of an invoke() response: read() returns the bytes."""

    def __init__(self, data):
        self._data = data

    def read(self, amt=None):
        """The payload's bytes (the rest of them, or up to `amt`)."""
        if amt is None:
            out, self._data = self._data, b""
        else:
            out, self._data = self._data[:amt], self._data[amt:]
        return out


class IoTDataPlane:
    """``client('iot-data')``: publish and the Device Shadow verbs."""

    def publish(self, topic, payload=b"", queueFullPolicy="BestEffort", qos=0):
        """Publishes `payload` on `topic` through the group's subscription table.
        BestEffort (Greengrass' default) does not wait; AllOrException waits for the
        runtime's answer and raises grove_function.Error when it was refused."""
        if queueFullPolicy == "AllOrException":
            _gf.publish(topic, payload, qos)
        elif queueFullPolicy == "BestEffort":
            _gf.publish_nowait(topic, payload, qos)
        else:
            raise ValueError("queueFullPolicy must be BestEffort or AllOrException")

    @staticmethod
    def _shadow(verb, *args):
        try:
            return {"payload": verb(*args)}
        except _gf.Error as e:
            raise ShadowError(str(e)) from None

    def get_thing_shadow(self, thingName, shadowName=""):
        """``{'payload': <the accepted document, JSON bytes>}``; raises ShadowError."""
        return self._shadow(_gf.get_thing_shadow, thingName, shadowName)

    def update_thing_shadow(self, thingName, payload, shadowName=""):
        """Sends `payload` (a JSON object: bytes, str or dict) as the update;
        ``{'payload': <the accepted document>}``; raises ShadowError."""
        return self._shadow(_gf.update_thing_shadow, thingName, payload, shadowName)

    def delete_thing_shadow(self, thingName, shadowName=""):
        """Deletes the shadow; ``{'payload': <the accepted reply>}``; raises ShadowError."""
        return self._shadow(_gf.delete_thing_shadow, thingName, shadowName)


def _function_name(name):
    """A function's name from a plain name or a Lambda ARN
    (arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>])."""
    if name.startswith("arn:"):
        parts = name.split(":")
        if len(parts) >= 7 and parts[5] == "function":
            return parts[6]
    return name


class Lambda:
    """``client('lambda')``: invoke another function."""

    def invoke(self, FunctionName, InvocationType="RequestResponse", Payload=b"",
               ClientContext=None, Qualifier=None):
        """Invokes the function: ``{'Payload': StreamingBody, 'FunctionError': ''}``; when
        the function failed (it raised, timed out, its instance died), FunctionError is
        'Unhandled' and Payload holds ``{"errorMessage": ...}``. An Event returns once the
        runtime queued it (Payload empty). ClientContext and Qualifier are accepted and
        ignored (Grove runs one version of a function)."""
        if InvocationType not in ("RequestResponse", "Event"):
            raise InvocationException(
                "InvocationType must be RequestResponse or Event, not %r" % InvocationType)
        try:
            reply = _gf.invoke(_function_name(FunctionName), Payload,
                               event=InvocationType == "Event")
        except _gf.Error as e:
            import json
            error = json.dumps({"errorMessage": str(e)}).encode("utf-8")
            return {"Payload": StreamingBody(error), "FunctionError": "Unhandled"}
        return {"Payload": StreamingBody(reply), "FunctionError": ""}


class ML:
    """``client('ml')``: inference on the group's ML model resources through ml_inference
    (only on models the function's resourceAccessPolicies grant)."""

    def infer(self, model, inputs=None, image=None, top_k=0, timeout_ms=0):
        """``infer(model='classifier', inputs={'x': array or (dtype, shape, bytes)},
        top_k=3)`` or ``image=<PNG/JPEG/BMP bytes>``: ``{'outputs': {name: array},
        'top': [{'index', 'label', 'score'}], 'version', 'batch_size'}``; raises
        InferenceError (``code``, ``message``). See grove_function.infer."""
        return _gf.infer(model, inputs=inputs, image=image, top_k=top_k,
                         timeout_ms=timeout_ms)


def client(name):
    """A client of the Greengrass core: 'iot-data', 'lambda' or 'ml'."""
    if name == "iot-data":
        return IoTDataPlane()
    if name == "lambda":
        return Lambda()
    if name == "ml":
        return ML()
    raise ValueError("greengrasssdk.client: unknown client '%s' (iot-data, lambda or ml)"
                     % name)
