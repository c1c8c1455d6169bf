#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/).

Run from anywhere: python3 tests/fuzz/make_seeds.py. Protobuf messages are encoded by
hand (no python3-protobuf needed); field numbers are those of proto/*.proto. Text seeds
come from the repository's own examples. Re-running rewrites the seeds it owns and
leaves other files (inputs added by hand or by a fuzzing run) alone.
"""
import base64
import json
import os
import pathlib
import sqlite3
import tempfile

root = pathlib.Path(__file__).resolve().parents[2]
corpus = root / "tests" / "fuzz" / "corpus"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(num, payload):  # length-delimited field
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def vi(num, value):  # varint field
    return varint(num << 3) + varint(value)


def frame(msg):
    return len(msg).to_bytes(4, "big") + msg


def envelope(topic, payload=b"", **kw):
    m = ld(1, topic) + ld(3, payload)
    if "source" in kw:
        m += ld(2, kw["source"])
    if "error" in kw:
        m += ld(9, kw["error"])
    if "error_code" in kw:
        m += vi(10, kw["error_code"])
    if "category" in kw:
        m += ld(11, kw["category"])
    return m


def write(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# control.Request / control.Response frames.
write("control_frame", "status", frame(ld(1, b"")))
write("control_frame", "publish", frame(ld(5, envelope("home/lamp/set", b"on"))))
write("control_frame", "subscribe", frame(ld(6, ld(1, "home/#"))))
write("control_frame", "call", frame(ld(8, ld(1, envelope("kv/get", b"k")) + vi(2, 1000))))
write("control_frame", "two_frames", frame(ld(2, b"")) + frame(ld(3, ld(1, "heartbeat"))))
write("control_frame", "reply_error",
      frame(vi(1, 1) + ld(8, envelope("kv/get", error="no such key", error_code=4,
                                      category="grove"))))
write("control_frame", "truncated", frame(ld(5, envelope("a/b")))[:-2])

# plugin_host.ToKernel frames from a child.
update = ld(1, "routed.to_cloud") + ld(2, "counter") + ld(3, "messages routed") + vi(6, 3)
labelled = (ld(1, "queue.depth") + ld(2, "gauge") + ld(3, "depth") + ld(4, "queue")
            + ld(5, "cloud") + vi(7, 12))
write("host_frame", "metrics", frame(ld(13, ld(1, update) + ld(1, labelled))))
write("host_frame", "subscribe_publish",
      frame(ld(2, "home/+/state")) + frame(ld(4, envelope("home/lamp/state", b"1"))))
write("host_frame", "serve_watch",
      frame(ld(10, "kv/#")) + frame(ld(12, vi(1, 7) + ld(2, "kv/get") + vi(3, 500))))
write("host_frame", "status", frame(ld(9, ld(1, "links") + ld(2, "up"))))

# Topic, filter, filter.
for i, (a, b, t) in enumerate([("home/+/state", "home/#", "home/lamp/state"),
                               ("+/x", "$SYS/#", "$SYS/x"),
                               ("#", "a/b/c", "a/b/c"),
                               ("a/+/#", "a/b", "a"),
                               ("", "/", "//")]):
    write("topic", f"seed{i}", f"{a}\n{b}\n{t}")

# HTTP requests to the metrics endpoint.
for name, req in {"get": "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                  "head": "HEAD /metrics?x=1 HTTP/1.0\r\n\r\n",
                  "post": "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                  "other": "GET / HTTP/1.1\r\n\r\n",
                  "partial": "GET /metrics HTTP/1.1\r\nHost",
                  # Bad methods: another verb, lower case, none at all.
                  "delete": "DELETE /metrics HTTP/1.1\r\n\r\n",
                  "lowercase": "get /metrics HTTP/1.1\r\n\r\n",
                  "no_target": "GET\r\n\r\n",
                  "http2": "GET /metrics HTTP/2\r\n\r\n",
                  # Line ends that are not CRLF, or a head that never ends.
                  "bare_lf": "GET /metrics HTTP/1.1\nHost: x\n\n",
                  "no_blank_line": "GET /metrics HTTP/1.1\r\nHost: x\r\n",
                  # NULs in the request line and in a header.
                  "nul_target": "GET /metrics\0 HTTP/1.1\r\n\r\n",
                  "nul_header": "GET /metrics HTTP/1.1\r\nHost: \0\0x\r\n\r\n",
                  # Lines around the server's 8 KiB request limit.
                  "long_line": "GET /metrics?" + "a" * 8100 + " HTTP/1.1\r\n\r\n",
                  "long_header": "GET /metrics HTTP/1.1\r\nX: " + "b" * 8200 + "\r\n\r\n",
                  "pipelined": "GET /metrics HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\n\r\n"}.items():
    write("metrics_request", name, req)

# Files an operator writes.
write("group", "home.yaml", (root / "configs" / "groups" / "home.yaml").read_text())
write("group", "small.json",
      '{"name": "j", "devices": [{"thing": "a"}], "subscriptions": [{"id": "x", '
      '"source": "device:a", "subject": "t/#", "target": "cloud"}]}')
for p in sorted((root / "configs" / "images").glob("*.yaml")):
    write("profile", p.name, p.read_text())
write("mm_config", "development", "development_mode: true\n")
write("mm_config", "tls",
      "broker:\n  port: 8883\n  ca_file: pki/ca.crt\n  cert_file: pki/server.crt\n"
      "  key_file: pki/server.key\n  client_cert_file: pki/devices/grove.crt\n"
      "  client_key_file: pki/devices/grove.key\ncloud:\n  enabled: true\n"
      "  host: example.com\n  thing_name: core-1\n  ca_file: /etc/grove/ca.pem\n"
      "  cert_file: /etc/grove/core-1.crt\n  key_file: /etc/grove/core-1.key\n"
      "spool: {storage: file, max_size_bytes: 10485760}\n")
write("mm_config", "bridge",
      "development_mode: true\n"
      "cloud: {enabled: true, host: example.com, thing_name: core-1, tls: false}\n"
      "bridge:\n  mqtt_topic_mapping:\n"
      "    - {name: up, topic: \"clients/+/hello\", source: LocalMqtt, target: Pubsub}\n"
      "    - {name: down, topic: \"replies/#\", source: Pubsub, target: LocalMqtt,"
      " targetTopicPrefix: \"core/\"}\n"
      "    - {name: cloud, topic: \"#\", source: IotCore, target: Pubsub}\n"
      "    - {name: shadow, topic: \"$aws/things/${iot:Connection.Thing.ThingName}/shadow/#\","
      " source: LocalMqtt, target: IotCore}\n"
      "    - {name: replies, topic: \"$aws/things/${iot:Connection.Thing.ThingName}/shadow/+/accepted\","
      " source: IotCore, target: LocalMqtt}\n")

# group.Group as message_manager gets it on the bus.
def sub(i, src, subject, dst):
    return ld(5, ld(1, i) + ld(2, src) + ld(3, subject) + ld(4, dst))

group = (ld(1, "home") + vi(2, 3) + ld(3, ld(1, "lamp")) + ld(3, ld(1, "switch") + vi(2, 1))
         + ld(4, ld(1, "brain")) + sub("s1", "device:switch", "home/switch/+", "function:brain")
         + sub("s2", "function:brain", "home/lamp/set", "device:lamp")
         + sub("s3", "device:lamp", "home/lamp/#", "cloud")
         + sub("s4", "device:switch", "home/switch/#", "device:lamp")
         + sub("s5", "shadow", "$aws/things/lamp/shadow/#", "device:lamp"))
write("mm_group", "home", group)

# The broker plugin's ACL file: the one its end-to-end test loads (broker_conf's first
# argument), and a refused one.
test = (root / "plugins" / "message_manager" / "broker" / "tests"
        / "broker_plugin_test.sh").read_text()
write("broker_acl", "plugin_test", test.split("broker_conf '", 1)[1].split("' ", 1)[0] + "\n")
write("broker_acl", "refused", "thing A\r\npub B t/#\ndeliver @device:A A x\n")
# As message_manager writes it: complete with `end` (a statement after it is refused).
write("broker_acl", "complete", "# generated\nthing A\npub A t/#\nend\n\n# after\n")


# message_manager's spool database (plugins/message_manager/src/spool.cpp: application_id
# 'GRVS', schema version 1), as a spool leaves it: a few messages, the sent high-water
# mark, and rows a damaged or hand-edited file may hold.
def spool_db(rows, meta, table="seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
                                "payload BLOB NOT NULL, qos INTEGER NOT NULL"):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spool.db")
        db = sqlite3.connect(path)
        db.execute("PRAGMA page_size=512")  # small seeds
        db.execute("PRAGMA application_id=%d" % 0x47525653)
        db.execute("PRAGMA user_version=1")
        db.execute("CREATE TABLE spool(%s)" % table)
        db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.executemany("INSERT INTO spool VALUES(?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO meta VALUES(?, ?)", meta)
        db.commit()
        db.close()
        return pathlib.Path(path).read_bytes()


write("mm_spool", "empty", b"")
write("mm_spool", "three", spool_db(
    [(1, "telemetry/a", b"x" * 10, 1), (2, "telemetry/b", b"", 1), (5, "f/to/cloud", b"y", 0)],
    [("sent_hwm", 2), ("next_seq", 6)]))
write("mm_spool", "edges", spool_db(
    [(-3, "t", b"neg", 1), (2**63 - 1, "t", b"max", 1), (7, "t", b"qos", 7)],
    [("sent_hwm", -1), ("next_seq", 2**63 - 1)]))
write("mm_spool", "loose_types", spool_db(
    [(1, None, None, None), (2, b"\xff\xfe", "text payload", "1"), (3.5, 3, 4, 1.5)],
    [("next_seq", "x")], table="seq, topic, payload, qos"))

# local_resources' resources[].config (plugins/local_resources/src/resource_def.cpp): each
# kind, another plugin's kind, and the refusals (a volume under /var, both kinds, a '..'
# source, a destination in the sandbox's own mounts, an unknown key).
write("local_resource", "volume.yaml",
      "localVolumeResourceData:\n  sourcePath: /srv/data\n  destinationPath: /data\n"
      "  groupOwnerSetting: {autoAddGroupOwner: true}\n")
write("local_resource", "device.yaml",
      "localDeviceResourceData: {sourcePath: /dev/ttyUSB0, groupOwnerSetting: "
      "{groupOwner: dialout}}\n")
write("local_resource", "other.yaml",
      "s3MachineLearningModelResourceData: {s3Uri: \"s3://b/m.tar.gz\", destinationPath: /model}\n")
write("local_resource", "var.yaml",
      "localVolumeResourceData: {sourcePath: /var/lib, destinationPath: /x}\n")
write("local_resource", "both.yaml",
      "localVolumeResourceData: {sourcePath: /a, destinationPath: /b}\n"
      "localDeviceResourceData: {sourcePath: /dev/x}\n")
write("local_resource", "bad.yaml",
      "localVolumeResourceData: {sourcePath: /srv/../var, destinationPath: /lambda/x, colour: red}\n")
# ml_inference's InferRequest (plugins/ml_inference/ml.proto; the first byte picks the
# model in targets/ml_request.cpp: 0 fixed [1,3,8,8], 1 [-1,16], 2 uint8 [-1,4,-1], 3 two
# inputs) and its model resources.
def tensor(name, dtype, shape, data):
    return ld(1, name) + vi(2, dtype) + b"".join(vi(3, d) for d in shape) + ld(4, data)
f32 = lambda n: b"\x00\x00\x80\x3f" * n  # 1.0f
write("ml_request", "fixed", b"\x00" + ld(1, tensor("x", 1, [1, 3, 8, 8], f32(192))))
write("ml_request", "batch", b"\x01" + ld(1, tensor("x", 1, [2, 16], f32(32))) + vi(3, 5))
write("ml_request", "uint8", b"\x02" + ld(1, tensor("x", 2, [1, 4, 2], bytes(range(8)))))
write("ml_request", "two", b"\x03" + ld(1, tensor("a", 1, [1, 2, 3], f32(6)))
      + ld(1, tensor("b", 1, [1, 4, 3], f32(12))))
write("ml_request", "huge_claim", b"\x01" + ld(1, tensor("x", 1, [1 << 29, 16], f32(1))))
write("ml_request", "nan", b"\x01" + ld(1, tensor("x", 1, [1, 16], b"\x00\x00\xc0\x7f" * 16)))
write("ml_request", "image", b"\x00" + ld(2, b"\x89PNG\r\n\x1a\n"))
# JPEGs for the strict decode (jpeg_check.cpp), whole and in a request's image: a good
# one, one whose scan is cut and closed with the end marker (libjpeg only warns), one with
# stray bytes before its frame header (read past), one with an EXIF orientation (6) and a
# CMYK one (converted by OpenCV's formula).
def _jpeg(mode="RGB", **kw):
    import io
    from PIL import Image  # python3-pil, as ml_inference_test's images
    im = Image.new("RGB", (24, 16))
    im.putdata([((x * 10) % 256, (y * 15) % 256, (x * y) % 256) for y in range(16) for x in range(24)])
    buf = io.BytesIO()
    im.convert(mode).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()
def _exif6():
    from PIL import Image
    e = Image.Exif()
    e[0x0112] = 6
    return e.tobytes()
_j = _jpeg()
_sos = _j.rfind(b"\xff\xda")
_j_corrupt = _j[:(_sos + len(_j)) // 2] + b"\xff\xd9"
_sof = _j.find(b"\xff\xc0")
write("ml_request", "jpeg", _j)
write("ml_request", "jpeg_corrupt", _j_corrupt)
write("ml_request", "image_jpeg_corrupt", b"\x00" + ld(2, _j_corrupt))
write("ml_request", "jpeg_stray", _j[:_sof] + b"\x00\x11\x55" + _j[_sof:])
write("ml_request", "jpeg_exif", _jpeg(exif=_exif6()))
write("ml_request", "jpeg_cmyk", _jpeg("CMYK"))
# function_runtime's worker frames: the hello, then InferCalls (function.proto Frame
# field 10: call_id, model, a serialized grove.ml.InferRequest, timeout_ms), one with a
# model name that is no topic level.
_hello = frame(ld(1, ld(1, "t") + vi(2, 1)))
_req = ld(1, tensor("x", 1, [1, 4], f32(4))) + vi(3, 2)
write("function_frame", "infer_call", _hello
      + frame(ld(10, vi(1, 1) + ld(2, "classifier") + ld(3, _req) + vi(4, 500)))
      + frame(ld(10, vi(1, 2) + ld(2, "a/+") + ld(3, b"\xff\xff"))))
# Text a worker sends that is not UTF-8 (Hello.error, Result.error, Log.text are bytes;
# the runtime escapes it): a result's error and a log line.
write("function_frame", "text_not_utf8", _hello
      + frame(ld(3, vi(1, 1) + ld(4, b"\xff\xfe")))
      + frame(ld(8, vi(1, 3) + ld(2, b"a\xff\x80\xe2\x82"))))
write("ml_resource", "onnx.yaml",
      "localMachineLearningModelResourceData:\n  path: /opt/models/a.onnx\n  sha256: "
      + "ab" * 32 + "\n  version: v1\n  maxBatchSize: 8\n  manifest:\n    inputs: "
      "[{name: x, dtype: float32, shape: [-1, 3, 32, 32]}]\n    preprocessing: {width: 32, "
      "height: 32, mean: [127.5], scale: 0.0078, channel_order: bgr, layout: nchw}\n"
      "    labels: [a, b]\n    top_k: 1\n")
write("ml_resource", "archive.yaml",
      "localMachineLearningModelResourceData: {path: /m/c.tar.gz, sha256: " + "0" * 64 + "}\n")
write("ml_resource", "bad.yaml",
      "localMachineLearningModelResourceData: {path: rel, sha256: x, manifest: {inputs: "
      "[{name: x, shape: [0]}, {name: x, shape: []}]}}\n")

# The deployment plugin's recipes (YAML and JSON, with the first line read as a version
# and a range too) and its API requests as SigV4 sees them.
write("deployment_recipe", "hello_yaml", """RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.HelloWorld
ComponentVersion: '1.0.0'
ComponentDescription: My first component
ComponentPublisher: Amazon
ComponentConfiguration:
  DefaultConfiguration: {Message: world, n: 18446744073709551615, f: 1.5, ok: true, none: ~}
ComponentDependencies:
  aws.greengrass.Nucleus: {VersionRequirement: '>=2.0.0 <3.0.0 || ^4.1', DependencyType: SOFT}
Manifests:
  - Platform: {os: linux, architecture: '*'}
    Lifecycle:
      run: python3 -u {artifacts:path}/hello_world.py "{configuration:/Message}"
    Artifacts:
      - Uri: s3://bucket/hello_world.py
        Digest: 'abc='
        Algorithm: SHA-256
        Unarchive: ZIP
        Permission: {Read: ALL, Execute: OWNER}
""")
write("deployment_recipe", "json", '{"RecipeFormatVersion": "2020-01-25", "ComponentName": "a.b", '
      '"ComponentVersion": "2.0.0-rc.1+build.5", "Manifests": [{"Platform": {"os": "*"}, '
      '"Lifecycle": {"install": {"script": "true", "timeout": 10}}, "Selections": ["x"]}], '
      '"ComponentConfiguration": {"DefaultConfiguration": {"yes": "no", "on": "01", "k": [1, -2, 0.5]}}}')
write("deployment_recipe", "range_first", "~1.2.3-beta.2 || 1.x - 2 || <=0.0.1\nComponentName: x\n")
write("deployment_recipe", "bad", "RecipeFormatVersion: 2020-01-25\nComponentName: .x\n"
      "ComponentVersion: 01.0\nColor: red\nComponentDependencies: {x: {DependencyType: MID}}\n"
      "Manifests:\n  - Artifacts:\n      - Uri: s3://b/..\n")
write("deployment_recipe", "deep", "[" * 70 + "]" * 70)
# deployment_recipe: life cycle steps with every key (checked at creation, lifecycle.cpp)
# and the values the checks refuse.
write("deployment_recipe", "lifecycle_keys", """RecipeFormatVersion: '2020-01-25'
ComponentName: a.b
ComponentVersion: 1.0.0
ComponentConfiguration: {DefaultConfiguration: {t: 7}}
Manifests:
  - Platform: {os: linux, architecture: /amd64|x86_64/}
    Lifecycle:
      setenv: {A: 1, B: x}
      bootstrap: {Script: b, BootstrapOnRollback: true, Timeout: 5}
      install: {script: i, timeout: '30', skipif: onpath sh, RequiresPrivilege: 'true'}
      run: {Script: r, Timeout: '{configuration:/t}', Skipif: 'exists {work:path}/x'}
      shutdown: {Script: d, Setenv: {X: '{artifacts:path}'}}
      recover: echo r
""")
write("deployment_recipe", "lifecycle_bad", """RecipeFormatVersion: '2020-01-25'
ComponentName: a.b
ComponentVersion: 1.0.0
Lifecycle:
  instal: x
  install: {Scirpt: x, Timeout: abc, Skipif: sometimes x, RequiresPrivilege: 'yes'}
  shutdown: {Script: x, Skipif: exists /}
  run: {Script: a, script: b, Setenv: {'A=B': [1]}}
""")
# deployment_apply: the runner's readers (tests/fuzz/targets/deployment_apply.cpp).
write("deployment_apply", "merge_reset", json.dumps({
    "defaults": {"Message": "hi", "list": [1, 2, 3], "o": {"a": 1, "b": {"c": 2}}},
    "previous": {"Message": "old", "list": [9], "o": {"a": 5, "x": 1}, "extra": True},
    "update": {"reset": ["/o/a", "/list/1", "/extra", "", "/missing/deep", "/o/b/c", "~bad"],
               "merge": '{"Message": "new", "o": {"b": {"d": [1, {"e": null}]}}}'}}))
write("deployment_apply", "render_vars", json.dumps({
    "defaults": {"k": "v", "n": {"m": [1, 2]}},
    "template": "echo {configuration:/k} {configuration:/n} {b.c:configuration:/k} "
                "{iot:thingName} {artifacts:path} {a:artifacts:decompressedPath} {work:path} "
                "{nope:work:path} {a{b}} {configuration:/~1x} ${HOME} {} {{ }} {"}))
write("deployment_apply", "lifecycle", json.dumps({
    "lifecycle": {"install": {"Script": "i", "Timeout": "30", "Skipif": " onpath  sh "},
                  "run": {"Script": "r", "Timeout": "{configuration:/t}",
                          "RequiresPrivilege": "True", "Setenv": {"A": 1, "B": "x"}},
                  "startup": {"Script": "s", "Skipif": "sometimes x", "Timeout": -1},
                  "shutdown": {"Scirpt": "typo"},
                  "bootstrap": {"Script": "b", "BootstrapOnRollback": "maybe"},
                  "setenv": {"G": "{work:path}"}, "recover": "echo {configuration:/k}"}}))
write("deployment_apply", "public_shadow", json.dumps({"public": {
    "strategy": {"type": "realTime"}, "shadowDocumentSizeLimitBytes": 8192,
    "synchronize": {"coreThing": {"classic": True, "namedShadows": ["a"], "thingName": "x"},
                    "shadowDocumentsMap": {"t1": {"classic": False}, "t2": 5},
                    "shadowDocuments": {"not": "a list"}},
    "rateLimits": {"maxOutboundSyncUpdatesPerSecond": 50, "unknown": 1}, "file": "/tmp/x"}}))
write("deployment_apply", "public_bridge", json.dumps({"public": {
    "mqttTopicMapping": {"m1": {"topic": "a/#", "source": "LocalMqtt", "target": "IotCore"},
                         "m2": "not a map"}}}))
write("deployment_apply", "skipif_text", "exists /tmp/{work:path}/done")
write("deployment_apply", "braces", "{{{a:{a:{b.c:configuration:/k}{b.c:work:path}{x:configuration:/"
      "{configuration:/o/x/1}{{iot:thingName}}{a:artifacts:decompressedPath}{a:artifacts:pathX}}")
write("deployment_request", "unsigned", "GET /greengrass/v2/components?maxResults=2\nhost: 127.0.0.1:8443\n\n")
write("deployment_request", "signed_post",
      "POST /greengrass/v2/createComponentVersion\nhost: 127.0.0.1:8443\n"
      "content-type: application/json\nx-amz-date: 20251202T120000Z\n"
      "authorization: AWS4-HMAC-SHA256 Credential=AKIAGROVEFUZZ00001/20251202/us-east-1/"
      "greengrass/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="
      + "0" * 64 + "\n\n{\"inlineRecipe\": \"e30=\"}")
write("deployment_request", "arn_path",
      "GET /greengrass/v2/components/arn%3Aaws%3Agreengrass%3Aus-east-1%3A123456789012%3A"
      "components%3Aa.b%3Aversions%3A1.0.0?recipeOutputFormat=YAML&a=%zz&b\n"
      "host: h\nuser-agent:   spaced   out  \nx-amz-content-sha256: abc\n"
      "authorization: AWS4-HMAC-SHA256 Credential=A/B/C\n\n")
# deployment_api: "METHOD TARGET" then the body; the fuzzer signs it.
hello = base64.b64encode(b"RecipeFormatVersion: '2020-01-25'\nComponentName: a.b\n"
                         b"ComponentVersion: '1.0.0'\nManifests:\n  - Platform: {os: linux}\n").decode()
write("deployment_api", "create", "POST /greengrass/v2/createComponentVersion\n"
      '{"inlineRecipe": "%s", "clientToken": "t-1", "tags": {"k": "v"}}' % hello)
write("deployment_api", "describe", "GET /greengrass/v2/components/arn%3Aaws%3Agreengrass%3A"
      "us-east-1%3A123456789012%3Acomponents%3Aa.b%3Aversions%3A1.0.0/metadata\n")
write("deployment_api", "list", "GET /greengrass/v2/components?maxResults=1&nextToken=YS5i\n")
write("deployment_api", "versions", "GET /greengrass/v2/components/arn%3Aaws%3Agreengrass%3A"
      "us-east-1%3A123456789012%3Acomponents%3Aa.b/versions?maxResults=100\n")
write("deployment_api", "resolve", "POST /greengrass/v2/resolveComponentCandidates\n"
      '{"platform": {"attributes": {"os": "linux"}}, "componentCandidates": '
      '[{"componentName": "a.b", "versionRequirements": {"x": "^1.0.0 || >=3"}}]}')
write("deployment_api", "tag", "POST /tags/arn%3Aaws%3Agreengrass%3Aus-east-1%3A123456789012%3A"
      'components%3Aa.b%3Aversions%3A1.0.0\n{"tags": {"a": "b"}}')
write("deployment_api", "untag", "DELETE /tags/arn%3Aaws%3Agreengrass%3Aus-east-1%3A123456789012%3A"
      "components%3Aa.b%3Aversions%3A1.0.0?tagKeys=a&tagKeys=%FF\n")
# Tags of deployment ARNs (issue 15): an id the fuzzer's deployments may or may not have.
write("deployment_api", "tag_deployment", "POST /tags/arn%3Aaws%3Agreengrass%3Aus-east-1%3A"
      '123456789012%3Adeployments%3A00000000-0000-4000-8000-000000000000\n{"tags": {"a": "b"}}')
write("deployment_api", "untag_deployment", "DELETE /tags/arn%3Aaws%3Agreengrass%3Aus-east-1%3A"
      "123456789012%3Adeployments%3A00000000-0000-4000-8000-000000000000?tagKeys=a\n")
write("deployment_api", "list_tags_deployment", "GET /tags/arn%3Aaws%3Agreengrass%3Aeu-west-1%3A"
      "123456789012%3Adeployments%3Ax\n")
write("deployment_api", "delete", "DELETE /greengrass/v2/components/arn%3Aaws%3Agreengrass%3A"
      "us-east-1%3A123456789012%3Acomponents%3Aa.b%3Aversions%3A1.0.0\n")
write("deployment_api", "create_deployment", "POST /greengrass/v2/deployments\n"
      '{"targetArn": "arn:aws:iot:us-east-1:123456789012:thing/core-1", "deploymentName": "d",'
      ' "clientToken": "t-2", "components": {"a.b": {"componentVersion": "1.0.0",'
      ' "configurationUpdate": {"merge": "{\\"k\\": 1}", "reset": ["/x", ""]},'
      ' "runWith": {"posixUser": "nobody:nogroup", "systemResourceLimits": {"memory": 1024, "cpus": 0.5}}}},'
      ' "deploymentPolicies": {"failureHandlingPolicy": "DO_NOTHING", "componentUpdatePolicy":'
      ' {"timeoutInSeconds": 5, "action": "SKIP_NOTIFY_COMPONENTS"},'
      ' "configurationValidationPolicy": {"timeoutInSeconds": 3}}, "tags": {"k": "v"}}')
write("deployment_api", "create_group_deployment", "POST /greengrass/v2/deployments\n"
      '{"targetArn": "arn:aws:iot:us-east-1:123456789012:thinggroup/site",'
      ' "components": {"a.b": {"componentVersion": "2.0.0"}}}')
write("deployment_api", "list_deployments", "GET /greengrass/v2/deployments?historyFilter=ALL"
      "&maxResults=1&targetArn=arn%3Aaws%3Aiot%3Aus-east-1%3A123456789012%3Athing%2Fcore-1\n")
write("deployment_api", "effective", "GET /greengrass/v2/coreDevices/core-1/effectiveDeployments?maxResults=1&nextToken=MQ%3D%3D\n")
write("deployment_api", "installed", "GET /greengrass/v2/coreDevices/core-1/installedComponents?topologyFilter=ROOT\n")
write("deployment_api", "core_devices", "GET /greengrass/v2/coreDevices?status=HEALTHY&thingGroupArn="
      "arn%3Aaws%3Aiot%3Aus-east-1%3A123456789012%3Athinggroup%2Fsite\n")
write("deployment_api", "cancel", "POST /greengrass/v2/deployments/x/cancel\n")

# deployment_v1_api: "METHOD TARGET", an optional "x-amzn-client-token: T" line, the body.
t = "arn:aws:iot:us-east-1:123456789012:thing/"
lam = "arn:aws:lambda:us-east-1:123456789012:function:"
dv = lambda i, n: {"Id": i, "ThingArn": t + n, "CertificateArn": "arn:aws:iot:us-east-1:123456789012:cert/ab"}
import json as _json
write("deployment_v1_api", "core", "POST /greengrass/definition/cores\nx-amzn-client-token: tok-1\n"
      + _json.dumps({"Name": "c", "InitialVersion": {"Cores": [dv("c", "core-1")]}, "tags": {"a": "b"}}))
write("deployment_v1_api", "devices", "POST /greengrass/definition/devices\n"
      + _json.dumps({"InitialVersion": {"Devices": [dv("a", "A"), dv("b", "B")]}}))
write("deployment_v1_api", "functions", "POST /greengrass/definition/functions\n"
      + _json.dumps({"InitialVersion": {"DefaultConfig": {"Execution": {"IsolationMode": "NoContainer"}},
                     "Functions": [{"Id": "f", "FunctionArn": lam + "f:1", "FunctionConfiguration": {
                         "Executable": "f", "Timeout": 3, "MemorySize": 1024, "EncodingType": "binary",
                         "ExecArgs": "-a  b", "Environment": {"Variables": {"X": "1"}, "AccessSysfs": True,
                         "ResourceAccessPolicies": [{"ResourceId": "r", "Permission": "rw"}],
                         "Execution": {"RunAs": {"Uid": 1, "Gid": 2}}}}}]}}))
write("deployment_v1_api", "subscriptions", "POST /greengrass/definition/subscriptions\n"
      + _json.dumps({"InitialVersion": {"Subscriptions": [
          {"Id": "s", "Source": t + "A", "Subject": "a/+/#", "Target": lam + "f:1"},
          {"Id": "t", "Source": "cloud", "Subject": "x", "Target": "GGShadowService"}]}}))
write("deployment_v1_api", "resources", "POST /greengrass/definition/resources\n"
      + _json.dumps({"InitialVersion": {"Resources": [{"Id": "r", "Name": "r", "ResourceDataContainer": {
          "LocalVolumeResourceData": {"SourcePath": "/srv", "DestinationPath": "/d",
                                      "GroupOwnerSetting": {"AutoAddGroupOwner": True}}}}]}}))
write("deployment_v1_api", "loggers", "POST /greengrass/definition/loggers\n"
      + _json.dumps({"InitialVersion": {"Loggers": [{"Id": "l", "Component": "Lambda", "Level": "WARN",
                                                      "Type": "FileSystem", "Space": 10}]}}))
write("deployment_v1_api", "group", "POST /greengrass/groups\n"
      + _json.dumps({"Name": "g", "InitialVersion": {
          "CoreDefinitionVersionArn": "arn:aws:greengrass:us-east-1:123456789012:/greengrass/definition/cores/x/versions/y"}}))
write("deployment_v1_api", "list", "GET /greengrass/groups?MaxResults=1&NextToken=MQ%3D%3D\n")
write("deployment_v1_api", "versions", "GET /greengrass/definition/devices/x/versions?MaxResults=2\n")
write("deployment_v1_api", "deploy", "POST /greengrass/groups/x/deployments\n"
      + _json.dumps({"DeploymentType": "NewDeployment", "GroupVersionId": "y"}))
write("deployment_v1_api", "reset", "POST /greengrass/groups/x/deployments/%24reset\n{\"Force\": true}")
write("deployment_v1_api", "status", "GET /greengrass/groups/x/deployments/y/status\n")
write("deployment_v1_api", "tag", "POST /tags/arn%3Aaws%3Agreengrass%3Aus-east-1%3A123456789012%3A"
      "%2Fgreengrass%2Fgroups%2Fx\n{\"tags\": {\"k\": \"v\"}}")
write("deployment_v1_api", "rename", "PUT /greengrass/definition/loggers/x\n{\"Name\": \"n\"}")
write("deployment_v1_api", "ca_create", "POST /greengrass/groups/x/certificateauthorities\n"
      "x-amzn-client-token: ca-1\n")
write("deployment_v1_api", "ca_get", "GET /greengrass/groups/x/certificateauthorities/" + "a" * 64 + "\n")
write("deployment_v1_api", "ca_list", "GET /greengrass/groups/x/certificateauthorities\n")
write("deployment_v1_api", "ca_expiry", "PUT /greengrass/groups/x/certificateauthorities/configuration/expiry\n"
      + _json.dumps({"CertificateExpiryInMilliseconds": "864000000"}))
write("deployment_v1_api", "ca_expiry_get", "GET /greengrass/groups/x/certificateauthorities/configuration/expiry\n")

# console_request: a Cookie header line, then a body (plugins/console/src/auth.cpp).
write("console_request", "login", 'grove_console=0123456789abcdef; theme=dark\n{"name":"alice","password":"secret"}')
write("console_request", "publish", 'a=1;grove_console=x\n{"topic":"f/to/b","payload":"hi","source":"function:F","content_type":""}')
write("console_request", "nested", '\n[[[[{"a":[1,2,{"b":null}]}]]]]')
write("console_request", "binary", b"grove_console\n\x00\x01\xff\xfe\xc3\xa9")
write("console_request", "snapshot", '\n[{"token":"' + "a" * 64 + '","name":"alice","csrf":"' + "b" * 64 + '","ms_left":1000}]')

# archive: the SDK's archive reader (sdk/plugin/src/archive.cpp), ZIP and tar(.gz) as a
# user's tools make them, and one of each kind of entry it refuses.
import io as _io
import tarfile as _tarfile
import zipfile as _zipfile


def _zip(entries):
    buf = _io.BytesIO()
    with _zipfile.ZipFile(buf, "w", _zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


def _tar(entries, mode="w:gz"):
    buf = _io.BytesIO()
    with _tarfile.open(fileobj=buf, mode=mode, format=_tarfile.PAX_FORMAT) as t:
        for e in entries:
            ti = _tarfile.TarInfo(e["name"])
            ti.mode = e.get("mode", 0o644)
            ti.mtime = 1700000000
            ti.type = e.get("type", _tarfile.REGTYPE)
            ti.linkname = e.get("link", "")
            data = e.get("data", b"")
            ti.size = len(data) if ti.type == _tarfile.REGTYPE else 0
            t.addfile(ti, _io.BytesIO(data) if ti.size else None)
    return buf.getvalue()


write("archive", "good_zip", _zip([("bin/run", b"#!/bin/sh\necho hi\n"),
                                    ("data/model.onnx", b"\x00\x01onnx" * 50)]))
write("archive", "good_tar_gz", _tar([
    {"name": "./", "type": _tarfile.DIRTYPE, "mode": 0o755},
    {"name": "./lib", "type": _tarfile.DIRTYPE, "mode": 0o755},
    {"name": "./lib/libx.so.1", "data": b"\x7fELF", "mode": 0o4755},
    {"name": "./lib/libx.so", "type": _tarfile.SYMTYPE, "link": "libx.so.1"},
    {"name": "./bin/x", "type": _tarfile.SYMTYPE, "link": "../lib/libx.so.1"},
    {"name": "./lib/copy", "type": _tarfile.LNKTYPE, "link": "lib/libx.so.1"}]))
write("archive", "plain_tar", _tar([{"name": "manifest.yaml", "data": b"model: m.onnx\n"},
                                    {"name": "m.onnx", "data": b"onnx"}], mode="w"))
write("archive", "zip_slip", _zip([("ok.txt", b"fine"), ("../../escaped.txt", b"evil")]))
write("archive", "absolute", _tar([{"name": "/tmp/grove-fuzz-abs", "data": b"evil"}]))
write("archive", "link_out", _tar([{"name": "l", "type": _tarfile.SYMTYPE, "link": "/etc"},
                                   {"name": "l/passwd", "data": b"evil"}]))
write("archive", "link_up", _tar([{"name": "a/l", "type": _tarfile.SYMTYPE, "link": "../../x"}]))
write("archive", "hardlink_out", _tar([{"name": "h", "type": _tarfile.LNKTYPE,
                                        "link": "../etc/passwd"}]))
write("archive", "device", _tar([{"name": "null", "type": _tarfile.CHRTYPE}]))
write("archive", "fifo", _tar([{"name": "p", "type": _tarfile.FIFOTYPE}]))
write("archive", "bomb_zip", _zip([("zeros", b"\x00" * (2 << 20))]))
write("archive", "many_entries", _tar([{"name": "f%d" % i, "data": b"x"} for i in range(80)]))

# deployment_eventstream: Greengrass IPC frames (event-stream) as the AWS clients send
# them: a connect with its auth token, an operation's request, a ping, two frames in one
# input, and broken ones (prelude CRC, message CRC, a header past its block).
import binascii as _binascii
import struct as _struct


def es_header(name, value):
    n = name.encode()
    if isinstance(value, int):
        return bytes([len(n)]) + n + b"\x04" + _struct.pack(">i", value)
    v = value.encode()
    return bytes([len(n)]) + n + b"\x07" + _struct.pack(">H", len(v)) + v


def es_frame(headers, payload=b""):
    hs = b"".join(es_header(k, v) for k, v in headers)
    total = 16 + len(hs) + len(payload)
    prelude = _struct.pack(">II", total, len(hs))
    prelude += _struct.pack(">I", _binascii.crc32(prelude))
    body = prelude + hs + payload
    return body + _struct.pack(">I", _binascii.crc32(body))


_connect = es_frame([(":message-type", 4), (":message-flags", 0), (":stream-id", 0),
                     (":version", "0.1.0")], b'{"authToken":"0123456789abcdef"}')
_publish = es_frame([(":message-type", 0), (":message-flags", 0), (":stream-id", 1),
                     ("operation", "aws.greengrass#PublishToTopic"),
                     ("service-model-type", "aws.greengrass#PublishToTopicRequest"),
                     (":content-type", "application/json")],
                    b'{"topic":"t/1","publishMessage":{"jsonMessage":{"message":{"a":1}}}}')
write("deployment_eventstream", "connect", _connect)
write("deployment_eventstream", "publish", _publish)
write("deployment_eventstream", "ping", es_frame([(":message-type", 2), (":stream-id", 0)]))
write("deployment_eventstream", "two", _connect + _publish)
write("deployment_eventstream", "bad_prelude_crc", _connect[:8] + b"\0\0\0\0" + _connect[12:])
write("deployment_eventstream", "bad_message_crc", _connect[:-1] + b"\0")
write("deployment_eventstream", "cut", _publish[:40])


# deployment_ipc: Greengrass IPC requests as the IPC server reads them, one per file: the
# operation's name (without aws.greengrass#, or `connect`), a newline, the JSON payload
# as the AWS clients send it.
def ipc(name, op, payload):
    write("deployment_ipc", name, op + "\n" + payload)


_b64 = base64.b64encode(b'{"state":{"desired":{"on":true}}}').decode()
ipc("connect", "connect", '{"authToken":"5a1c0e3f9b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"}')
ipc("connect_no_token", "connect", '{}')
ipc("publish_json", "PublishToTopic",
    '{"topic":"sensors/temp","publishMessage":{"jsonMessage":{"message":{"t":21.5,"ok":true}}}}')
ipc("publish_binary", "PublishToTopic",
    '{"topic":"sensors/raw","publishMessage":{"binaryMessage":{"message":"aGVsbG8="}}}')
ipc("publish_binary_number", "PublishToTopic",
    '{"topic":"t","publishMessage":{"binaryMessage":{"message":5}}}')
ipc("publish_no_message", "PublishToTopic", '{"topic":"a/+/b","publishMessage":{}}')
ipc("subscribe", "SubscribeToTopic", '{"topic":"sensors/#","receiveMode":"RECEIVE_MESSAGES_FROM_OTHERS"}')
ipc("subscribe_bad", "SubscribeToTopic", '{"topic":"a/#/b"}')
ipc("get_configuration", "GetConfiguration", '{"componentName":"com.example.Hello","keyPath":["a","b"]}')
ipc("get_configuration_all", "GetConfiguration", '{}')
ipc("update_state", "UpdateState", '{"state":"RUNNING"}')
ipc("update_state_bad", "UpdateState", '{"state":"STOPPING"}')
ipc("subscribe_updates", "SubscribeToComponentUpdates", '{}')
ipc("defer", "DeferComponentUpdate",
    '{"deploymentId":"d-1","message":"busy","recheckAfterMs":5000}')
ipc("subscribe_validation", "SubscribeToValidateConfigurationUpdates", '')
ipc("validity_report", "SendConfigurationValidityReport",
    '{"configurationValidityReport":{"status":"REJECTED","deploymentId":"d-2","message":"port out of range"}}')
ipc("validity_report_bad", "SendConfigurationValidityReport",
    '{"configurationValidityReport":{"status":"ACCEPTED","deploymentId":7}}')
ipc("get_shadow", "GetThingShadow", '{"thingName":"core","shadowName":"config"}')
ipc("update_shadow", "UpdateThingShadow", '{"thingName":"core","payload":"' + _b64 + '"}')
ipc("delete_shadow", "DeleteThingShadow", '{"thingName":"core","shadowName":null}')
ipc("list_shadows", "ListNamedShadowsForThing", '{"thingName":"core","pageSize":10,"nextToken":"x"}')
ipc("publish_iot", "PublishToIoTCore", '{"topicName":"dt/core/telemetry","qos":"AT_LEAST_ONCE","payload":"aGk="}')
ipc("publish_iot_bad_payload", "PublishToIoTCore", '{"topicName":"dt/x","qos":"AT_MOST_ONCE","payload":"!"}')
ipc("subscribe_iot", "SubscribeToIoTCore", '{"topicName":"cmd/core/+","qos":"AT_LEAST_ONCE"}')
ipc("subscribe_configuration", "SubscribeToConfigurationUpdate",
    '{"componentName":"com.example.Hello","keyPath":["limits"]}')
ipc("update_configuration", "UpdateConfiguration",
    '{"keyPath":["limits"],"timestamp":1733380000.5,"valueToMerge":{"max":3,"names":["a","b"]}}')
ipc("update_configuration_root", "UpdateConfiguration",
    '{"timestamp":1,"valueToMerge":{"accessControl":{}}}')
ipc("update_configuration_acl", "UpdateConfiguration",
    '{"keyPath":["accessControl"],"timestamp":1,"valueToMerge":{}}')
ipc("deep", "UpdateConfiguration",
    '{"keyPath":["k"],"timestamp":2,"valueToMerge":' + "[" * 63 + "]" * 63 + "}")
ipc("too_deep", "PublishToTopic", "[" * 70 + "]" * 70)
ipc("unsupported", "ResumeComponent", '{"componentName":"x"}')
ipc("not_json", "UpdateState", '{"state":')
# `frames`: a connection's bytes, the connect and two requests as event-stream frames.
def _ipc_request(sid, op, body):
    return es_frame([(":message-type", 0), (":message-flags", 0), (":stream-id", sid),
                     ("operation", "aws.greengrass#" + op), (":content-type", "application/json")],
                    body.encode())
write("deployment_ipc", "frames", b"frames\n" + _connect +
      _ipc_request(1, "UpdateState", '{"state":"RUNNING"}') +
      _ipc_request(2, "SendConfigurationValidityReport",
                   '{"configurationValidityReport":{"status":"ACCEPTED","deploymentId":"d"}}'))


# ---- mm_route_frame: the broker plugin's route socket frames (route_frame.hpp) ----------
def route_frame(source, topic, payload=b"", qos=0, retain=False, content_type=b"", props=()):
    # Integers big-endian, as Grove's other frames.
    source, topic = source.encode(), topic.encode()
    if isinstance(content_type, str):
        content_type = content_type.encode()
    body = source + topic + content_type
    for k, v in props:
        k, v = k.encode(), v.encode()
        body += len(k).to_bytes(2, "big") + len(v).to_bytes(2, "big") + k + v
    body += payload
    head = bytes([2, qos, 1 if retain else 0, 0]) + b"".join(
        n.to_bytes(2, "big") for n in (len(source), len(topic), len(content_type), len(props)))
    head += len(payload).to_bytes(4, "big")
    return (len(head) + len(body)).to_bytes(4, "big") + head + body


_rf_props = route_frame("A", "a/to/f/props", b'{"t":21}', 1, False, "application/json",
                        [("unit", "C"), ("site", "north"), ("unit", "F")])
write("mm_route_frame", "one", route_frame("A", "a/to/f/x", b"to-function"))
write("mm_route_frame", "props", _rf_props)
write("mm_route_frame", "batch", route_frame("dev-1", "bench/1", b"x" * 64, 1) + _rf_props +
      route_frame("B", "$aws/things/B/shadow/update", b"{}", 0))
write("mm_route_frame", "incomplete", _rf_props + _rf_props[:17])
write("mm_route_frame", "retained", route_frame("A", "a/to/f/r", b"kept", 1, True))
# Version 1 (integers in host order) and a length over the bound.
write("mm_route_frame", "bad_version", b"\x01".join([_rf_props[:4], _rf_props[5:]]))
write("mm_route_frame", "too_long", (1 << 30).to_bytes(4, "big") + _rf_props[4:])
