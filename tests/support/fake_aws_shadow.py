#!/usr/bin/python3
"""A fake AWS IoT Device Shadow service for Grove's tests.

It connects (MQTT 3.1.1, mutual TLS or plain) to the Mosquitto a test runs as "the
cloud" and answers the AWS IoT shadow topics for classic and named shadows, as the AWS
IoT Developer Guide describes them ("Device Shadow service MQTT topics", "Shadow
documents"):

  $aws/things/T/shadow[/name/S]/get     -> get/accepted (state desired/reported/delta,
                                           metadata, version, timestamp) | get/rejected 404
  $aws/things/T/shadow[/name/S]/update  -> update/accepted (the request's state, its
                                           metadata, version, timestamp), update/documents
                                           (previous, current; no previous for a new
                                           shadow), update/delta (when the
                                           update had `desired` and desired != reported)
                                           | update/rejected 400 / 409
  $aws/things/T/shadow[/name/S]/delete  -> delete/accepted {version, timestamp}
                                           | delete/rejected 404

Rules kept: a null leaf deletes it (and a null `desired`/`reported` the whole section);
objects merge, arrays and scalars replace; every update (and a delete) bumps the version;
an update carrying `version` other than the current one is rejected 409 "Version
conflict"; a deleted shadow keeps its version, so the next one goes on from it; each leaf
of desired/reported has metadata {"timestamp": <epoch seconds>} of its last change (an
array one per element);
`clientToken` is echoed. Errors are {"code", "message", "timestamp"[, "clientToken"]}.
Left out: the 8 KB size limit, persistent sessions, rate limits.

Control interface for tests (HTTP/1.0 on 127.0.0.1:--control-port, JSON bodies):
  GET  /health                  -> {"connected": bool, "handled": n}
  GET  /shadow/T[/S]            -> the stored document {state:{desired,reported},
                                   metadata, version, timestamp} | 404
  PUT  /shadow/T[/S]            -> seed a document as given (state, optional metadata,
                                   version, timestamp); no MQTT message is sent
  POST /update/T[/S]            -> apply an update as a cloud application would (publishes
                                   accepted/documents/delta like an MQTT update); the
                                   answer is what update/accepted or /rejected carried
  POST /offline, POST /online   -> drop the MQTT connection (requests meanwhile are not
                                   answered) and come back (subscribing again)

--ready-file F is written with the control port once the service is subscribed.
Needs Debian's python3-paho-mqtt (installed by tools/deps).
"""

import argparse
import copy
import http.server
import json
import os
import re
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt

TOPIC = re.compile(
    r"^\$aws/things/(?P<thing>[^/]+)/shadow(?:/name/(?P<name>[^/]+))?/(?P<op>get|update|delete)$")
SUBSCRIPTIONS = [
    "$aws/things/+/shadow/get", "$aws/things/+/shadow/update", "$aws/things/+/shadow/delete",
    "$aws/things/+/shadow/name/+/get", "$aws/things/+/shadow/name/+/update",
    "$aws/things/+/shadow/name/+/delete",
]


def now():
    return int(time.time())


def prefix(thing, name):
    return f"$aws/things/{thing}/shadow" + (f"/name/{name}" if name else "")


def merge(target, patch, meta, ts):
    """Merges `patch` into `target` (dicts), null deleting; stamps `meta` per leaf."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
            meta.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            if not isinstance(meta.get(key), dict) or "timestamp" in meta.get(key, {}):
                meta[key] = {}
            merge(target[key], value, meta[key], ts)
            if not target[key]:  # an object left empty goes, as in AWS
                del target[key]
                meta.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)
            meta[key] = stamp(value, ts)


def stamp(value, ts):
    """The metadata of a value: the same shape, each leaf stamped (an array one entry
    per element, as AWS keeps it)."""
    if isinstance(value, dict):
        return {key: stamp(child, ts) for key, child in value.items()}
    if isinstance(value, list):
        return [stamp(element, ts) for element in value]
    return {"timestamp": ts}


def delta(desired, reported):
    """The desired leaves that differ from reported (objects compared per key)."""
    out = {}
    for key, value in desired.items():
        other = reported.get(key) if isinstance(reported, dict) else None
        if isinstance(value, dict) and isinstance(other, dict):
            sub = delta(value, other)
            if sub:
                out[key] = sub
        elif value != other:
            out[key] = copy.deepcopy(value)
    return out


def pick_meta(meta, shape):
    """The metadata of the leaves in `shape` (for delta)."""
    out = {}
    for key, value in shape.items():
        m = meta.get(key, {})
        out[key] = pick_meta(m, value) if isinstance(value, dict) else m
    return out


class Shadows:
    """The documents, by (thing, name); name "" is the classic shadow."""

    def __init__(self):
        self.lock = threading.Lock()
        self.docs = {}  # key -> {"desired", "reported", "meta_desired", "meta_reported", "version"}
        self.versions = {}  # key -> last version (kept across delete)
        self.handled = 0

    def document(self, key):
        d = self.docs[key]
        state, metadata = {}, {}
        for part in ("desired", "reported"):
            if d[part]:
                state[part] = copy.deepcopy(d[part])
                metadata[part] = copy.deepcopy(d["meta_" + part])
        return {"state": state, "metadata": metadata, "version": d["version"],
                "timestamp": now()}

    def get(self, key):
        """(suffix, body) of a get."""
        if key not in self.docs:
            return "rejected", self.error(404, f"No shadow exists with name: '{key[1] or key[0]}'")
        doc = self.document(key)
        d = self.docs[key]
        dl = delta(d["desired"], d["reported"])
        if dl:
            doc["state"]["delta"] = dl
        return "accepted", doc

    def delete(self, key):
        if key not in self.docs:
            return "rejected", self.error(404, f"No shadow exists with name: '{key[1] or key[0]}'")
        version = self.docs.pop(key)["version"]
        return "accepted", {"version": version, "timestamp": now()}

    def update(self, key, payload):
        """[(suffix, body), ...] to publish for an update request."""
        try:
            req = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return [("rejected", self.error(400, "Invalid JSON"))]
        if not isinstance(req, dict):
            return [("rejected", self.error(400, "Invalid JSON"))]
        token = req.get("clientToken")
        if "state" not in req:
            return [("rejected", self.error(400, "Missing required node: state", token))]
        state = req["state"]
        if not isinstance(state, dict):
            return [("rejected", self.error(400, "State node must be an object", token))]
        for part in ("desired", "reported"):
            if part in state and state[part] is not None and not isinstance(state[part], dict):
                return [("rejected", self.error(400, f"{part} node must be an object", token))]
        if "version" in req and (not isinstance(req["version"], int)
                                 or isinstance(req["version"], bool)):
            return [("rejected", self.error(400, "Invalid version", token))]
        existed = key in self.docs
        if "version" in req and req["version"] != (self.docs[key]["version"] if existed else None):
            return [("rejected", self.error(409, "Version conflict", token))]
        ts = now()
        previous = self.document(key) if existed else None
        d = self.docs.setdefault(key, {"desired": {}, "reported": {}, "meta_desired": {},
                                       "meta_reported": {}, "version": self.versions.get(key, 0)})
        for part in ("desired", "reported"):
            if part not in state:
                continue
            if state[part] is None:
                d[part], d["meta_" + part] = {}, {}
            else:
                merge(d[part], state[part], d["meta_" + part], ts)
        d["version"] += 1
        self.versions[key] = d["version"]
        accepted = {"state": state, "metadata": stamp({k: v for k, v in state.items()
                                                        if isinstance(v, dict)}, ts),
                    "version": d["version"], "timestamp": ts}
        current = self.document(key)
        documents = {"current": {k: current[k] for k in ("state", "metadata", "version")},
                     "timestamp": ts}
        if previous is not None:
            documents["previous"] = {k: previous[k] for k in ("state", "metadata", "version")}
        out = [("accepted", accepted), ("documents", documents)]
        dl = delta(d["desired"], d["reported"])
        if isinstance(state.get("desired"), dict) and dl:
            out.append(("delta", {"state": dl, "metadata": pick_meta(d["meta_desired"], dl),
                                  "version": d["version"], "timestamp": ts}))
        if token is not None:
            for _, body in out:
                body["clientToken"] = token
        return out

    def seed(self, key, doc):
        state = doc.get("state", {})
        ts = doc.get("timestamp", now())
        d = {"desired": copy.deepcopy(state.get("desired") or {}),
             "reported": copy.deepcopy(state.get("reported") or {}),
             "version": int(doc.get("version", self.versions.get(key, 0) + 1))}
        meta = doc.get("metadata", {})
        for part in ("desired", "reported"):
            d["meta_" + part] = copy.deepcopy(meta.get(part)) if part in meta else stamp(d[part], ts)
        self.docs[key] = d
        self.versions[key] = d["version"]

    @staticmethod
    def error(code, message, token=None):
        body = {"code": code, "message": message, "timestamp": now()}
        if token is not None:
            body["clientToken"] = token
        return body


class Service:
    def __init__(self, args):
        self.args = args
        self.shadows = Shadows()
        self.connected = threading.Event()
        self.client = None
        self.pending_sub = None

    def connect(self):
        c = mqtt.Client(client_id=self.args.client_id, clean_session=True)
        if self.args.cafile:
            c.tls_set(ca_certs=self.args.cafile, certfile=self.args.cert, keyfile=self.args.key,
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self.on_connect
        c.on_disconnect = lambda *_: self.connected.clear()
        c.on_message = self.on_message
        c.on_subscribe = self.on_subscribe
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.connect_async(self.args.host, self.args.port, keepalive=30)
        c.loop_start()
        self.client = c

    def disconnect(self):
        c, self.client = self.client, None
        if c is not None:
            c.disconnect()
            c.loop_stop()
        self.connected.clear()

    def on_connect(self, client, _userdata, _flags, rc):
        if rc != 0:
            return
        # Ready only at the SUBACK: a request published after /health says connected is
        # heard. Callbacks run on the loop thread, so the SUBACK comes after this.
        _, self.pending_sub = client.subscribe([(f, 1) for f in SUBSCRIPTIONS])

    def on_subscribe(self, _client, _userdata, mid, _granted):
        if mid == self.pending_sub:
            self.connected.set()

    def on_message(self, client, _userdata, msg):
        m = TOPIC.match(msg.topic)
        if not m:
            return
        key = (m["thing"], m["name"] or "")
        base = prefix(*key)
        with self.shadows.lock:
            self.shadows.handled += 1
            if m["op"] == "update":
                out = self.shadows.update(key, msg.payload)
            else:
                token = None
                try:
                    req = json.loads(msg.payload) if msg.payload else {}
                    token = req.get("clientToken") if isinstance(req, dict) else None
                except (ValueError, UnicodeDecodeError):
                    pass
                suffix, body = getattr(self.shadows, m["op"])(key)
                if token is not None:
                    body["clientToken"] = token
                out = [(suffix, body)]
        for suffix, body in out:
            if suffix in ("accepted", "rejected"):
                topic = f"{base}/{m['op']}/{suffix}"
            else:
                topic = f"{base}/update/{suffix}"
            client.publish(topic, json.dumps(body, separators=(",", ":")), qos=1)

    def cloud_update(self, key, body):
        """POST /update: an update made by a cloud application."""
        with self.shadows.lock:
            out = self.shadows.update(key, body)
        base = prefix(*key)
        client = self.client
        for suffix, doc in out:
            if client is not None:
                topic = f"{base}/update/{suffix}"
                client.publish(topic, json.dumps(doc, separators=(",", ":")), qos=1)
        return out[0]


def make_handler(service):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def answer(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def key(self, head):
            parts = self.path.strip("/").split("/")
            if parts[0] != head or len(parts) not in (2, 3):
                return None
            return (parts[1], parts[2] if len(parts) == 3 else "")

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self):
            if self.path == "/health":
                return self.answer(200, {"connected": service.connected.is_set(),
                                         "handled": service.shadows.handled})
            key = self.key("shadow")
            if key is None:
                return self.answer(404, {"message": "unknown path"})
            with service.shadows.lock:
                if key not in service.shadows.docs:
                    return self.answer(404, {"message": "no such shadow"})
                return self.answer(200, service.shadows.document(key))

        def do_PUT(self):
            key = self.key("shadow")
            if key is None:
                return self.answer(404, {"message": "unknown path"})
            try:
                doc = json.loads(self.body())
            except ValueError:
                return self.answer(400, {"message": "invalid JSON"})
            with service.shadows.lock:
                service.shadows.seed(key, doc)
                return self.answer(200, service.shadows.document(key))

        def do_POST(self):
            if self.path == "/offline":
                service.disconnect()
                return self.answer(200, {"connected": False})
            if self.path == "/online":
                if service.client is None:
                    service.connect()
                return self.answer(200, {"connected": service.connected.wait(10)})
            key = self.key("update")
            if key is None:
                return self.answer(404, {"message": "unknown path"})
            suffix, body = service.cloud_update(key, self.body())
            return self.answer(200 if suffix == "accepted" else body["code"], body)

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the cloud broker's port")
    p.add_argument("--cafile", help="CA of the broker (TLS; none: plain TCP)")
    p.add_argument("--cert", help="client certificate (mutual TLS)")
    p.add_argument("--key", help="client key")
    p.add_argument("--client-id", default="fake-aws-shadow")
    p.add_argument("--control-port", type=int, default=0, help="0: any free port")
    p.add_argument("--ready-file", help="written with the control port once subscribed")
    args = p.parse_args()

    service = Service(args)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.control_port),
                                             make_handler(service))
    service.connect()
    if not service.connected.wait(30):
        print("fake_aws_shadow: could not connect and subscribe", file=sys.stderr)
        return 1
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write(f"{server.server_address[1]}\n")
        os.replace(args.ready_file + ".tmp", args.ready_file)
    print(f"fake_aws_shadow: control on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
