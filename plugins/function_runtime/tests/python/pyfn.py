"""The Python functions the runtime tests run (runtime: python3, codeUri: this directory):
each handler is one well- or badly-behaved function, named by `handler: pyfn.<name>`."""

import json
import logging
import os
import sys
import time

import greengrasssdk
import grove_function

iot = greengrasssdk.client("iot-data")
lam = greengrasssdk.client("lambda")
log = logging.getLogger("pyfn")


def echo(event, context):
    """The event back: JSON re-encoded, bytes as they are (binary encoding)."""
    return event


def pid(event, context):
    """The instance's pid; raises when the event says so (the instance goes on), or
    first sleeps the seconds it gives as "sleep"."""
    if isinstance(event, dict) and event.get("raise"):
        raise ValueError("asked to raise: %s" % event["raise"])
    if isinstance(event, dict) and event.get("sleep"):
        time.sleep(event["sleep"])
    return os.getpid()


def levels(event, context):
    """One logging record per level, tagged with the event's "tag"."""
    tag = event.get("tag", "")
    log.debug("debug %s", tag)
    log.info("info %s", tag)
    log.warning("warning %s", tag)
    log.critical("critical %s", tag)
    return "logged"


def uid(event, context):
    """The user the instance runs as."""
    return os.getuid()


def context(event, context):
    """The context as the handler sees it, and the event's Python type."""
    return {
        "function": context.function_name,
        "subject": context.subject,
        "source": context.source,
        "invocation": context.invocation_id,
        "request_id": context.aws_request_id,
        "custom_subject": context.client_context.custom["subject"],
        "event": context.event,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "type": type(event).__name__,
    }


def text(event, context):
    """A str return value: the reply is its JSON encoding."""
    return "plain text"


def hang(event, context):
    """Never returns: timeoutInSeconds ends the instance."""
    while True:
        time.sleep(1)


def interpreter(event, context):
    """What execArgs and environmentVariables did to the interpreter."""
    return {"optimize": sys.flags.optimize, "greeting": os.environ.get("GREETING")}


def call(event, context):
    """Invokes event["function"] through greengrasssdk's lambda client."""
    r = lam.invoke(FunctionName=event["function"], InvocationType="RequestResponse",
                   Payload=json.dumps({"from": "python"}))
    return {"payload": r["Payload"].read().decode(), "error": r["FunctionError"]}


def publish(event, context):
    """Publishes the event on fn/out, waiting for the runtime's answer."""
    iot.publish(topic="fn/out", payload=json.dumps(event), queueFullPolicy="AllOrException")
    return "published"


def relay(event, context):
    """Device -> function -> device: the event on $RELAY_TOPIC."""
    iot.publish(topic=os.environ["RELAY_TOPIC"], payload=json.dumps(event, separators=(",", ":")),
                queueFullPolicy="AllOrException")
    log.info("relayed from %s on '%s'", context.source, context.subject)
    return {"relayed": event}


def shadow(event, context):
    """event {"op": get|update|delete, "thing": ..., "doc": {...}}: the verb on the
    thing's shadow; the accepted document is the reply, a rejection (ShadowError) the
    item's error."""
    op, thing = event["op"], event.get("thing", "lamp")
    if op == "update":
        r = iot.update_thing_shadow(thingName=thing, payload=json.dumps(event["doc"]))
    elif op == "get":
        r = iot.get_thing_shadow(thingName=thing)
    else:
        r = iot.delete_thing_shadow(thingName=thing)
    return json.loads(r["payload"])


BAD = b"bad \xff\xfe text".decode("utf-8", "surrogateescape")  # not UTF-8 once encoded


def badtext(event, context):
    """Text that is not UTF-8 (os.fsdecode's kind). "raise" raises it, "log" logs it (the
    SDK escapes both); "raw" sends it unescaped, as a worker that does not escape would
    (the runtime must): a Log frame past the SDK's log(), and as the error of the
    exception it raises; "raw_big" raises 50000 such bytes unescaped and uncut (the
    runtime cuts them). Anything else: the pid."""
    if event == "raise":
        raise ValueError(BAD)
    if event == "log":
        log.warning(BAD)
    if event in ("raw", "raw_big"):
        if event == "raw":
            grove_function._chan().send(grove_function._wire.Frame(log=grove_function._wire.Log(
                level=1, text=("raw " + BAD).encode("utf-8", "surrogateescape"))))
        escape = grove_function._error_text

        def unescaped(text, max_frame):  # this once
            grove_function._error_text = escape
            return text.encode("utf-8", "surrogateescape")
        grove_function._error_text = unescaped
        raise ValueError("raw " + BAD if event == "raw" else "\udcff" * 50000)
    return os.getpid()


def oversize(event, context):
    """Frames over max_frame_bytes from the SDK's side: {"result": n} returns a str of n
    bytes (n + 2 as JSON), {"raise": n} raises n three-byte characters, {"publish": n}
    publishes n bytes and answers the verb's error; anything else: the pid."""
    if "result" in event:
        return "r" * event["result"]
    if "raise" in event:
        raise ValueError("\u20ac" * event["raise"])
    if "publish" in event:
        try:
            grove_function.publish("fn/out", b"p" * event["publish"])
            return "published"
        except grove_function.Error as e:
            return str(e)
    return os.getpid()
