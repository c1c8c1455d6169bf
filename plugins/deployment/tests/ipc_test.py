#!/usr/bin/python3
"""Greengrass IPC for generic components, with boto3 and AWS's Node IPC client (issue 15).

Usage: ipc_test.py main|reload|restarted ENDPOINT CA_BUNDLE WRITE_DIR COMPONENT_JS NODE_MODULES GROVECTL
e2e.IpcSub and e2e.IpcPub run ipc_component.js (aws-iot-device-sdk-v2's
greengrasscoreipc): Pub's messages reach Sub through local publish/subscribe (both allowed
by their accessControl) once each; local publish/subscribe is Grove's bus: `grovectl sub`
sees Pub's messages and `grovectl pub` reaches Sub. Sub's publish to a topic its policy does not list is refused
(UnauthorizedError), GetConfiguration answers the whole configuration and a key path,
UpdateState: e2e.IpcStartup's startup never exits but reports RUNNING (its deployment
completes; without the report it would time out), e2e.IpcFlaky's first run reports
ERRORED and is ended and run again (the second run reports RUNNING). A NOTIFY_COMPONENTS deployment changing Sub's configuration is
validated by Sub (ACCEPTED), announced (preUpdateEvent), deferred once by 1 s, announced
again and acknowledged, then applied (postUpdateEvent). A configuration with `bad: true`
is REJECTED: its deployment FAILS with Sub's message and nothing is announced. A
SKIP_NOTIFY_COMPONENTS deployment is applied without a preUpdateEvent. Raw clients: a
wrong token's connect is refused, a malformed frame ends its connection, one that sends
nothing is closed after 10 s. e2e.IpcShadow's shadow operations (its
accessControl."aws.greengrass.ShadowManager" lists thing ipc-thing) reach the shadow
plugin: update, get (also seen with `grovectl shadow get`), named shadows listed a page
at a time, delete, ResourceNotFoundError for the deleted one, UnauthorizedError for
another thing, InvalidArgumentsError for a document that is not JSON; once the shadow
plugin is unloaded, ServiceError saying so. e2e.IpcConfig's UpdateConfiguration is read
back with GetConfiguration and heard by its SubscribeToConfigurationUpdate, an older
timestamp is FailedUpdateConditionCheckError, and a deployment's change of Sub's greeting
is heard by its subscription to Sub's configuration. e2e.IpcControl's PauseComponent /
ResumeComponent (its aws.greengrass.ipc.lifecycle policy lists Pub, Flaky and e2e.NoSuch):
Pub's process frozen and its publishes stopped while it stays RUNNING, a second pause no
error, resumed (publishes go on), a resume of a running one InvalidArgumentsError, Sub
(not in the policy) UnauthorizedError, e2e.NoSuch ResourceNotFoundError, with
GROVE_DEPLOYMENT_FREEZER=v2 a paused Flaky whose processes are killed run again and its
freeze leaf removed, and a deployment removing the paused Flaky ends its processes.
`reload` (after main): `grovectl reload deployment` keeps the components' IPC
connections: Pub's messages published after it and `grovectl pub` still reach Sub's
subscription, Sub's GetConfiguration on its connection answers, Sub was not restarted, and
its token is still accepted; Pub, paused before the reload, is resumed by the hand-over
(the new instance: not paused), and paused again before groved is killed.
`restarted` (after kill -9 of groved and a new start): e2e.IpcConfig's change is still in
force when it starts again, and the processes of the Pub groved had paused are gone
(thawed by the new groved, then killed).
Prints PASS/FAIL lines; exits 1 on any failure.
"""
import base64
import binascii
import hashlib
import hmac
import json
import os
import select
import subprocess
import socket
import struct
import sys
import time

import support
from support import check, client, read, thing_arn, wait

PHASE, ENDPOINT, CA, WRITE, SCRIPT, NODE_MODULES, GROVECTL = sys.argv[1:8]
CTL = [GROVECTL, "--socket", f"{WRITE}/run/control.sock"]
THING = thing_arn("core-1")
WORK = f"{WRITE}/plugins/deployment/components/work"
SOCKET = f"{WRITE}/plugins/deployment/greengrass-ipc.socket"
gg = client("greengrassv2", ENDPOINT, CA)


def recipe(role, policy_ops, resources, step="run", shadow_ops=(), shadow_resources=(),
           lifecycle_ops=(), lifecycle_resources=()):
    return f"""ComponentConfiguration:
  DefaultConfiguration:
    greeting: hi
    nested: {{a: 1}}
    accessControl:
      aws.greengrass.ipc.pubsub:
        "e2e.Ipc:pubsub:1":
          policyDescription: the test topics
          operations: {json.dumps(policy_ops)}
          resources: {json.dumps(resources)}
      aws.greengrass.ShadowManager:
        "e2e.Ipc:shadow:1":
          operations: {json.dumps(list(shadow_ops))}
          resources: {json.dumps(list(shadow_resources))}
      aws.greengrass.ipc.lifecycle:
        "e2e.Ipc:lifecycle:1":
          operations: {json.dumps(list(lifecycle_ops))}
          resources: {json.dumps(list(lifecycle_resources))}
Manifests:
  - Platform: {{os: linux}}
    Lifecycle:
      setenv: {{NODE_PATH: "{NODE_MODULES}"}}
      {step}: exec node "{SCRIPT}" {role} {{work:path}}
"""


def lines(name, file):
    return [x for x in read(f"{WORK}/{name}/{file}").splitlines() if x]


def starts(after_ready=False):
    """What e2e.IpcConfig's GetConfiguration of `dyn` read at each start, before it
    changed anything (after_ready: only the starts after its first "ready")."""
    conf = lines("e2e.IpcConfig", "config")
    if after_ready:
        conf = conf[conf.index("ready") + 1:] if "ready" in conf else []
    return [x[6:] for x in conf if x.startswith("start ")]


def control(cmd, name):
    """e2e.IpcControl's PauseComponent / ResumeComponent of `name` through AWS's client:
    {"ok": True} or {"error": shape (or the client's description), "message": ...}."""
    before = len(lines("e2e.IpcControl", "control"))
    with open(f"{WORK}/e2e.IpcControl/cmd", "w") as f:
        f.write(f"{cmd} {name}")
    got = wait(lambda: len(lines("e2e.IpcControl", "control")) > before and
               json.loads(lines("e2e.IpcControl", "control")[-1]), 20)
    return got or {"error": "no answer", "message": read(f"{WORK}/e2e.IpcControl/errors")}


def procs_of(role):
    """The pids of ipc_component.js processes running `role` for this test's groved (run
    in a work directory under WRITE: ctest may run this test's variants at once)."""
    out = []
    mine = os.path.realpath(WRITE) + "/"
    for p in os.listdir("/proc"):
        if p.isdigit():
            args = read(f"/proc/{p}/cmdline").split("\0")
            try:
                cwd = os.readlink(f"/proc/{p}/cwd") + "/"
            except OSError:
                continue
            if SCRIPT in args and role in args and cwd.startswith(mine):
                out.append(int(p))
    return out


# GROVE_DEPLOYMENT_FREEZER (tests only, component_freezer.hpp): ctest runs this test with
# it unset (the freezer's own choice: the v1 freezer on a host with one), `v2` (cgroup v2's
# cgroup.freeze) and `signal` (SIGSTOP/SIGCONT); a paused process must show paused that way.
FREEZER = os.environ.get("GROVE_DEPLOYMENT_FREEZER", "")


def cgroup_mount(kind, option=None):
    """Where the cgroup (v1, holding `option`) or cgroup2 file system is mounted."""
    for x in read("/proc/self/mountinfo").splitlines():
        left, _, right = x.partition(" - ")
        fields = right.split(" ")
        if fields[0] == kind and (option is None or option in fields[-1].split(",")):
            return left.split(" ")[4]
    return None


def v1_frozen(pid):
    """Whether `pid`'s v1 freezer group says FROZEN."""
    for x in read(f"/proc/{pid}/cgroup").splitlines():
        parts = x.split(":", 2)
        if len(parts) == 3 and "freezer" in parts[1].split(","):
            state = read(f"/sys/fs/cgroup/freezer{parts[2]}/freezer.state").strip()
            if state == "FROZEN":
                return True
    return False


def v2_frozen(pid):
    """Whether `pid`'s v2 cgroup reports "frozen 1" (cgroup.events)."""
    mount = cgroup_mount("cgroup2")
    for x in read(f"/proc/{pid}/cgroup").splitlines():
        if mount and x.startswith("0::/") and x != "0::/":
            return "frozen 1" in read(f"{mount}{x[3:]}/cgroup.events").splitlines()
    return False


def v2_cgroup(pid):
    """`pid`'s v2 cgroup directory, or None."""
    mount = cgroup_mount("cgroup2")
    for x in read(f"/proc/{pid}/cgroup").splitlines():
        if mount and x.startswith("0::/"):
            return f"{mount}{x[3:]}"
    return None


def stopped(pid):
    """Whether `pid`'s state is T (SIGSTOP)."""
    return read(f"/proc/{pid}/stat").split(") ")[-1][:1] == "T"


def frozen(pid):
    """Whether `pid` is paused the way GROVE_DEPLOYMENT_FREEZER says (unset: any way)."""
    return {"v1": v1_frozen, "v2": v2_frozen, "signal": stopped}.get(
        FREEZER, lambda p: v1_frozen(p) or v2_frozen(p) or stopped(p))(pid)


def all_frozen(pids):
    """Whether every one of `pids` (some) is paused, waiting a little for it (a stop
    signal is delivered after kill(2) returns)."""
    return bool(pids) and bool(wait(lambda: all(frozen(p) for p in pids), 5))


def paused_any(pid):
    """Whether `pid` is paused in any way (a resume must end all of them)."""
    return v1_frozen(pid) or v2_frozen(pid) or stopped(pid)


def frozen_groups_of_gone_groveds():
    """The freeze groups (grove-freeze-<pid>/*, and v2's grove-components-<pid>/*) still
    frozen of the groved this test killed (KILLED_GROVED_PID): ctest may run this test's
    other variants at the same time, each with its own groved."""
    killed = os.environ.get("KILLED_GROVED_PID", "")
    out = []
    for kind, mount, file, is_frozen in (
            ("v1", cgroup_mount("cgroup", "freezer"), "freezer.state", lambda t: t.strip() == "FROZEN"),
            ("v2", cgroup_mount("cgroup2"), "cgroup.events", lambda t: "frozen 1" in t.splitlines())):
        if not mount:
            continue
        for top, dirs, _ in os.walk(mount):
            name = os.path.basename(top)
            for prefix in ("grove-freeze-", "grove-components-"):
                if name == prefix + killed and not support.alive(int(killed)):
                    out += [f"{top}/{d}" for d in dirs if is_frozen(read(f"{top}/{d}/{file}"))]
    return out


def latest():
    return max(pub_ns() or [-1])



if PHASE == "restarted":
    # groved was killed (-9) after the main phase (which saw e2e.IpcConfig "ready") and
    # started again: e2e.IpcConfig runs again and reads what its UpdateConfiguration made
    # before the crash.
    again = wait(lambda: starts(after_ready=True), 60)
    check("after kill -9 of groved, the component's UpdateConfiguration change is still in "
          "force (GetConfiguration at its next start)",
          bool(again) and again[0] == '{"x":1}', lines("e2e.IpcConfig", "config"))
    # Pub was paused (frozen) when groved was killed: the new groved thaws what the last
    # one left frozen, so its old processes end (a frozen one ignores even SIGKILL).
    old = [int(x) for x in lines("e2e.IpcControl", "paused-pids")]
    gone = wait(lambda: not any(support.alive(p) for p in old), 20)
    check("after kill -9 of groved, the processes of a component it had paused are gone "
          "(thawed, not left frozen)", bool(old) and bool(gone),
          [(p, read(f"/proc/{p}/stat")[:60]) for p in old])
    # v2 freezes a group, not its tasks: SIGKILL ends a v2-frozen process, and its group
    # stays frozen (empty) unless the next groved thaws it.
    check("... and no freeze group of the killed groved is left frozen",
          os.environ.get("KILLED_GROVED_PID", "").isdigit()
          and not frozen_groups_of_gone_groveds(), frozen_groups_of_gone_groveds())
    support.finish()


def pub_ns():
    """The numbers of Pub's messages Sub received, in order."""
    return [json.loads(x).get("message", {}).get("n") for x in lines("e2e.IpcSub", "received")
            if json.loads(x).get("message", {}).get("from") == "pub"]


def again():
    """Sub's GetConfiguration of greeting on its own connection (ipc_component.js)."""
    before = len(lines("e2e.IpcSub", "again.log"))
    with open(f"{WORK}/e2e.IpcSub/again", "w") as f:
        f.write("1")
    got = wait(lambda: len(lines("e2e.IpcSub", "again.log")) > before and
               lines("e2e.IpcSub", "again.log")[-1], 20)
    return got or ""


def token_accepted(name):
    """Whether a fresh connection's connect with `name`'s token (SVCUID) is ACCEPTED."""
    key = open(f"{WRITE}/plugins/deployment/ipc.key", "rb").read()
    token = hmac.new(key, name.encode(), hashlib.sha256).hexdigest()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(SOCKET)
        s.sendall(frame([(":message-type", 4), (":message-flags", 0), (":stream-id", 0),
                         (":version", "0.1.0")], json.dumps({"authToken": token}).encode()))
        reply = s.recv(4096)
    except OSError:
        return False
    finally:
        s.close()
    return flags_of(reply) == 1


def deploy(sub_update=None, action="NOTIFY_COMPONENTS", drop=()):
    sub = {"componentVersion": "1.0.0"}
    if sub_update is not None:
        sub["configurationUpdate"] = {"merge": json.dumps(sub_update)}
    components = {"e2e.IpcSub": sub, "e2e.IpcPub": {"componentVersion": "1.0.0"},
                  "e2e.IpcStartup": {"componentVersion": "1.0.0"},
                  "e2e.IpcFlaky": {"componentVersion": "1.0.0"},
                  "e2e.IpcShadow": {"componentVersion": "1.0.0"},
                  "e2e.IpcConfig": {"componentVersion": "1.0.0"},
                  "e2e.IpcControl": {"componentVersion": "1.0.0"}}
    for name in drop:
        components.pop(name)
    did = gg.create_deployment(
        targetArn=THING,
        components=components,
        deploymentPolicies={"componentUpdatePolicy": {"timeoutInSeconds": 30, "action": action},
                            "configurationValidationPolicy": {"timeoutInSeconds": 30}},
    )["deploymentId"]
    d = support.settle(gg, did, 90)
    return did, d.get("deploymentStatus"), support.effective(gg, did).get("reason", "")


def frame(headers, payload=b""):
    hs = b""
    for k, v in headers:
        n = k.encode()
        if isinstance(v, int):
            hs += bytes([len(n)]) + n + b"\x04" + struct.pack(">i", v)
        else:
            hs += bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v.encode()
    prelude = struct.pack(">II", 16 + len(hs) + len(payload), len(hs))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + hs + payload
    return body + struct.pack(">I", binascii.crc32(body))


def raw(data, timeout=10):
    """What groved answers `data` on a fresh connection, until it closes (b"" if nothing),
    and whether it closed within `timeout` seconds."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(SOCKET)
    s.sendall(data)
    got = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                return got, True
            got += b
    except socket.timeout:
        return got, False
    finally:
        s.close()


def flags_of(reply):
    """The :message-flags header of the first frame in `reply` (None without one)."""
    if len(reply) < 16:
        return None
    total, hlen = struct.unpack(">II", reply[:8])
    h, end = 12, 12 + hlen
    while h < end:
        n = reply[h]
        name = reply[h + 1:h + 1 + n].decode()
        t = reply[h + 1 + n]
        h += 2 + n
        if t == 4:
            v = struct.unpack(">i", reply[h:h + 4])[0]
            h += 4
            if name == ":message-flags":
                return v
        elif t == 7:
            ln = struct.unpack(">H", reply[h:h + 2])[0]
            h += 2 + ln
        else:
            return None
    return None


if PHASE == "reload":
    # After the main phase: `grovectl reload deployment` hands Greengrass IPC's socket and
    # the components' connections to the new instance. AWS's clients do not reconnect, so
    # Sub's subscription and requests go on on the connection it opened before. Pub is
    # paused before it: the hand-over resumes it (nothing stays frozen unknown to the new
    # instance), so its publishes go on after the reload as well.
    ready = len(lines("e2e.IpcSub", "ready"))
    ok = control("pause", "e2e.IpcPub")
    check("Pub paused before the reload", ok.get("ok") and
          all_frozen(procs_of("pub")), ok)
    first = again()
    check("before the reload, Sub's GetConfiguration on its connection answers",
          first.startswith("again "), first)
    log_from = len(read(f"{WRITE}/../groved.out"))
    r = subprocess.run(CTL + ["reload", "deployment"], capture_output=True, text=True)
    check("grovectl reload deployment: state carried over",
          r.returncode == 0 and "state carried over" in r.stdout + r.stderr, r.stdout + r.stderr)
    since = (pub_ns() or [-1])[-1]
    came = wait(lambda: any(n > since + 5 for n in pub_ns()), 20)
    check("after the reload, Pub's PublishToTopic still reaches Sub's subscription (same "
          "connections)", bool(came),
          (pub_ns()[-5:], since, read(f"{WORK}/e2e.IpcPub/errors")[-300:]))
    ns = pub_ns()
    check("... each once", len(ns) == len(set(ns)), ns[-20:])
    pub = subprocess.run(CTL + ["pub", "ipc/test/reloaded", '{"from": "reloaded"}'],
                         capture_output=True, text=True)
    came = wait(lambda: any(json.loads(x).get("message", {}).get("from") == "reloaded"
                            for x in lines("e2e.IpcSub", "received")), 20)
    check("after the reload, grovectl pub reaches Sub's subscription", bool(came),
          pub.stdout + pub.stderr)
    after = again()
    check("after the reload, Sub's GetConfiguration on the same connection answers as before",
          after.startswith("again ") and json.loads(after[6:]) == json.loads(first[6:]),
          (first, after))
    check("... Sub was not started again (it would have subscribed anew)",
          len(lines("e2e.IpcSub", "ready")) == ready, lines("e2e.IpcSub", "ready"))
    log = read(f"{WRITE}/../groved.out")[log_from:]
    check("... the new instance took the connections over, nobody disconnected",
          "connection(s) taken over from the last instance" in log
          and "e2e.IpcSub disconnected" not in log
          and "e2e.IpcPub disconnected" not in log,
          [x for x in log.splitlines() if "IPC" in x][:10])
    check("the same token (SVCUID) is still accepted on a new connection",
          token_accepted("e2e.IpcSub"))
    check("... the hand-over resumed the paused Pub (logged; not frozen)",
          "resumed (hot reload of the deployment plugin)" in log
          and not any(paused_any(p) for p in procs_of("pub")),
          [x for x in log.splitlines() if "IpcPub" in x][:5])
    no = control("resume", "e2e.IpcPub")
    check("... the new instance knows it is not paused (ResumeComponent: InvalidArgumentsError)",
          "InvalidArgumentsError" in no.get("error", ""), no)
    # Paused again for the `restarted` phase (kill -9 of groved follows).
    ok = control("pause", "e2e.IpcPub")
    pids = procs_of("pub")
    with open(f"{WORK}/e2e.IpcControl/paused-pids", "w") as f:
        f.write("".join(f"{p}\n" for p in pids))
    check("Pub paused again before groved is killed", ok.get("ok") and bool(pids) and
          all_frozen(pids), (ok, pids))
    support.finish()


support.component(gg, "e2e.IpcSub", recipe("sub", ["aws.greengrass#SubscribeToTopic"], ["ipc/test/#"]))
support.component(gg, "e2e.IpcPub", recipe("pub", ["aws.greengrass#PublishToTopic"], ["ipc/test/*"]))

support.component(gg, "e2e.IpcStartup", recipe("startup", [], [], step="startup"))
support.component(gg, "e2e.IpcFlaky", recipe("flaky", [], []))
support.component(gg, "e2e.IpcShadow", recipe(
    "shadow", [], [],
    shadow_ops=[f"aws.greengrass#{op}" for op in ("GetThingShadow", "UpdateThingShadow",
                                                   "DeleteThingShadow", "ListNamedShadowsForThing")],
    shadow_resources=["$aws/things/ipc-thing/shadow", "$aws/things/ipc-thing/shadow/name/*"]))

support.component(gg, "e2e.IpcConfig", recipe("config", [], []))
# PauseComponent / ResumeComponent of Pub and Flaky (and of a component that is not there,
# to see ResourceNotFoundError after authorization); Sub is not in its policy.
support.component(gg, "e2e.IpcControl", recipe(
    "control", [], [],
    lifecycle_ops=["aws.greengrass#PauseComponent", "aws.greengrass#ResumeComponent"],
    lifecycle_resources=["e2e.IpcPub", "e2e.IpcFlaky", "e2e.NoSuch"]))


def shadow_steps():
    """e2e.IpcShadow's results by step (the last of each)."""
    return {x["step"]: x for x in map(json.loads, lines("e2e.IpcShadow", "shadow"))}

d1, status, reason = deploy()
check("the IPC components deployed -> COMPLETED (a startup that never exits reported RUNNING)",
      status == "COMPLETED", f"{status} {reason}")
if status != "COMPLETED":
    support.finish()  # the rest builds on this set
pid = read(f"{WORK}/e2e.IpcStartup/pid").strip()
check("... that startup's process still runs, RUNNING",
      pid.isdigit() and support.alive(int(pid)) and
      support.installed(gg).get("e2e.IpcStartup", {}).get("lifecycleState") == "RUNNING",
      (pid, support.installed(gg).get("e2e.IpcStartup")))
runs = wait(lambda: len(lines("e2e.IpcFlaky", "runs")) >= 2 and
            support.installed(gg).get("e2e.IpcFlaky", {}).get("lifecycleState") == "RUNNING", 30)
first_run = lines("e2e.IpcFlaky", "runs")[:1]
check("a run reporting ERRORED is ended and run again (RUNNING)",
      bool(runs) and first_run and not support.alive(int(first_run[0])),
      (lines("e2e.IpcFlaky", "runs"), support.installed(gg).get("e2e.IpcFlaky")))
ready = wait(lambda: lines("e2e.IpcSub", "ready"), 30)
check("Sub connected, subscribed, read its configuration and reported RUNNING", bool(ready),
      "errors: " + read(f"{WORK}/e2e.IpcSub/errors"))
got = wait(lambda: [json.loads(x) for x in lines("e2e.IpcSub", "received")], 20) or []
check("Pub's messages reach Sub through local publish/subscribe (topic in the context)",
      any(m.get("message", {}).get("from") == "pub" and
          m.get("context", {}).get("topic") == "ipc/test/hello" for m in got),
      f"{got[:3]} errors: " + read(f"{WORK}/e2e.IpcPub/errors"))
ns = [m["message"]["n"] for m in got if m.get("message", {}).get("from") == "pub"]
check("... each once (the bus's copy of a component's publish is not delivered again)",
      len(ns) == len(set(ns)), ns)
watch = subprocess.Popen(CTL + ["sub", "ipc/test/#"], stdout=subprocess.PIPE, text=True)
seen = ""
try:
    end = 20
    while end > 0 and '"from":"pub"' not in seen.replace(" ", ""):
        r, _, _ = select.select([watch.stdout], [], [], 1)
        end -= 1
        if r:
            seen += watch.stdout.readline()
finally:
    watch.kill()
    watch.wait()
check("a component's PublishToTopic is on Grove's bus (grovectl sub)",
      "ipc/test/hello" in seen and '"from":"pub"' in seen.replace(" ", ""), seen[:300])
pub = subprocess.run(CTL + ["pub", "ipc/test/grove", '{"from": "grove"}'], capture_output=True, text=True)
came = wait(lambda: any(json.loads(x).get("message", {}).get("from") == "grove" and
                        json.loads(x).get("context", {}).get("topic") == "ipc/test/grove"
                        for x in lines("e2e.IpcSub", "received")), 20)
check("a message on the bus reaches a component's SubscribeToTopic (grovectl pub)", bool(came),
      pub.stdout + pub.stderr)
# JSON nested past the IPC bound (64 levels; answers recurse) reaches a component as its
# bytes (binaryMessage), not as a jsonMessage.
DEEP = "[" * 100 + "]" * 100
pub = subprocess.run(CTL + ["pub", "ipc/test/deep", DEEP], capture_output=True, text=True)
deep = wait(lambda: [json.loads(x) for x in lines("e2e.IpcSub", "received")
                     if json.loads(x).get("context", {}).get("topic") == "ipc/test/deep"], 20)
check("JSON nested 100 deep on the bus reaches Sub as a binaryMessage of its bytes",
      bool(deep) and deep[0].get("binary") in (DEEP, base64.b64encode(DEEP.encode()).decode()),
      (str(deep)[:200], pub.stdout + pub.stderr))
cfg = json.loads(read(f"{WORK}/e2e.IpcSub/config") or "{}")
check("GetConfiguration with no key path: the whole merged configuration",
      cfg.get("componentName") == "e2e.IpcSub" and cfg.get("value", {}).get("greeting") == "hi"
      and cfg.get("value", {}).get("nested") == {"a": 1}, cfg)
greet = json.loads(read(f"{WORK}/e2e.IpcSub/greeting") or "{}")
check("GetConfiguration of a leaf: {key: value}", greet.get("value") == {"greeting": "hi"}, greet)
denied = read(f"{WORK}/e2e.IpcSub/denied")
check("a publish its accessControl does not allow -> UnauthorizedError",
      "not authorized" in denied and "forbidden/x" in denied, denied)
log = read(f"{WRITE}/../groved.out")
check("UpdateState RUNNING heard", "e2e.IpcSub reports RUNNING (UpdateState)" in log)
check("... and the ERRORED one's reason logged", "reported ERRORED (UpdateState)" in log)

steps = wait(lambda: "done" in shadow_steps() and shadow_steps(), 30) or shadow_steps()
value = lambda step: steps.get(step, {}).get("value", {})
check("UpdateThingShadow through the shadow plugin: accepted, version 1",
      value("update").get("state") == {"reported": {"t": 1}} and value("update").get("version") == 1,
      (steps.get("update"), read(f"{WORK}/e2e.IpcShadow/errors")))
check("GetThingShadow: the document (state, metadata, version)",
      value("get").get("state") == {"reported": {"t": 1}} and "metadata" in value("get")
      and value("get").get("version") == 1, steps.get("get"))
ctl = subprocess.run(CTL + ["shadow", "get", "ipc-thing"], capture_output=True, text=True)
check("... the same document on Grove's bus (grovectl shadow get)",
      json.loads(ctl.stdout or "{}").get("state") == {"reported": {"t": 1}}, ctl.stdout + ctl.stderr)
l1, l2 = value("list1"), value("list2")
check("ListNamedShadowsForThing pages with pageSize and nextToken",
      l1.get("results") == ["cfg"] and l1.get("nextToken") and l2.get("results") == ["cfg2"]
      and not l2.get("nextToken") and "timestamp" in l1, (steps.get("list1"), steps.get("list2")))
check("DeleteThingShadow of a named shadow: accepted (its version)",
      value("delete-named").get("version") == 1, steps.get("delete-named"))
check("GetThingShadow of the deleted shadow -> ResourceNotFoundError",
      steps.get("get-deleted", {}).get("error") == "aws.greengrass#ResourceNotFoundError",
      steps.get("get-deleted"))
check("a thing its accessControl does not list -> UnauthorizedError naming the resource",
      steps.get("get-other", {}).get("error") == "aws.greengrass#UnauthorizedError" and
      "$aws/things/other-thing/shadow" in (steps.get("get-other", {}).get("message") or ""),
      steps.get("get-other"))
check("an update that is not JSON -> InvalidArgumentsError",
      steps.get("update-bad", {}).get("error") == "aws.greengrass#InvalidArgumentsError",
      steps.get("update-bad"))

ready = wait(lambda: "ready" in lines("e2e.IpcConfig", "config"), 30)
conf = lines("e2e.IpcConfig", "config")
check("UpdateConfiguration merges into the component's own configuration (GetConfiguration)",
      'value {"x":1}' in conf, (conf, read(f"{WORK}/e2e.IpcConfig/errors")))
check("... where the component found no `dyn` at its first start", starts()[:1] == ["none"], conf)
own = [json.loads(x[4:]) for x in conf if x.startswith("own ")]
check("... and its SubscribeToConfigurationUpdate hears the changed key",
      any(e.get("componentName") == "e2e.IpcConfig" and e.get("keyPath", [])[:1] == ["dyn"]
          for e in own), conf)
check("an UpdateConfiguration with an older timestamp -> FailedUpdateConditionCheckError",
      "stale aws.greengrass#FailedUpdateConditionCheckError" in conf, conf)
check("a valueToMerge nested 100 deep -> InvalidArgumentsError (merge, diff and dump recurse)",
      "deep aws.greengrass#InvalidArgumentsError" in conf, conf)

d2, status, reason = deploy({"greeting": "hello"})
check("a NOTIFY_COMPONENTS deployment changing Sub's configuration -> COMPLETED",
      status == "COMPLETED", f"{status} {reason}")
ups = lines("e2e.IpcSub", "updates")
check("Sub was told before the update, deferred once, then acknowledged",
      f"defer {d2}" in ups and f"ack {d2}" in ups and ups.index(f"defer {d2}") < ups.index(f"ack {d2}"), ups)
check("Sub validated its new configuration first (ACCEPTED)",
      f"ACCEPTED {d2}" in lines("e2e.IpcSub", "validations"), lines("e2e.IpcSub", "validations"))
greet = wait(lambda: json.loads(read(f"{WORK}/e2e.IpcSub/greeting") or "{}").get("value") == {"greeting": "hello"}, 30)
check("Sub restarted with the new configuration (GetConfiguration)", bool(greet),
      read(f"{WORK}/e2e.IpcSub/greeting"))
heard = wait(lambda: [x for x in lines("e2e.IpcConfig", "config") if x.startswith("sub ")], 20)
check("a deployment's change of Sub's greeting: an event to a subscriber of Sub's configuration",
      bool(heard) and json.loads(heard[0][4:]) == {"componentName": "e2e.IpcSub", "keyPath": ["greeting"]},
      lines("e2e.IpcConfig", "config"))
wait(lambda: lines("e2e.IpcSub", "ready") and len(lines("e2e.IpcSub", "ready")) >= 2, 30)

d3, status, reason = deploy({"bad": True})
check("a configuration Sub REJECTS -> FAILED with Sub's message",
      status == "FAILED" and "bad is not allowed" in reason and "e2e.IpcSub" in reason,
      f"{status} {reason}")
check("... validated, and no update announced for it",
      f"REJECTED {d3}" in lines("e2e.IpcSub", "validations") and
      not any(d3 in x for x in lines("e2e.IpcSub", "updates")),
      (lines("e2e.IpcSub", "validations"), lines("e2e.IpcSub", "updates")))

d4, status, reason = deploy({"greeting": "skip"}, action="SKIP_NOTIFY_COMPONENTS")
check("a SKIP_NOTIFY_COMPONENTS deployment -> COMPLETED", status == "COMPLETED", f"{status} {reason}")
check("... with no preUpdateEvent", not any(d4 in x for x in lines("e2e.IpcSub", "updates")),
      lines("e2e.IpcSub", "updates"))

connect = frame([(":message-type", 4), (":message-flags", 0), (":stream-id", 0),
                 (":version", "0.1.0")], b'{"authToken":"not-a-token"}')
reply, closed = raw(connect)
check("a connect with a wrong token: refused (connect ack without ACCEPTED) and closed",
      closed and flags_of(reply) == 0, (reply, closed))
bad = bytearray(connect)
bad[-1] ^= 0xFF
reply, closed = raw(bytes(bad))
check("a malformed frame (message CRC) ends its connection, unanswered", closed and reply == b"",
      (reply, closed))
reply, closed = raw(struct.pack(">II", 64 << 20, 0) + b"\0" * 8)
check("a frame over the bound (prelude CRC wrong or too long) ends its connection", closed, closed)
reply, closed = raw(b"", timeout=30)
check("a client that sends no connect is closed (within the plugin's 10 s)", closed and reply == b"",
      (reply, closed))
# More wrong tokens at once: the log says the first and counts the rest (a window of
# 60 s), not one line each.
for _ in range(10):
    raw(connect, timeout=5)
refused = read(f"{WRITE}/../groved.out").count("a connect with an unknown token refused")
check("eleven connects with wrong tokens: at most two log lines for them, not one each",
      1 <= refused <= 2, refused)

# Fields of the wrong type, with Pub's own token (HMAC-SHA256 of its name under the
# plugin's key): answered, naming the field; they used to throw on the server's thread.
key = open(f"{WRITE}/plugins/deployment/ipc.key", "rb").read()
token = hmac.new(key, b"e2e.IpcPub", hashlib.sha256).hexdigest()
hello = frame([(":message-type", 4), (":message-flags", 0), (":stream-id", 0),
               (":version", "0.1.0")], json.dumps({"authToken": token}).encode())
def request(sid, op, body):
    return frame([(":message-type", 0), (":message-flags", 0), (":stream-id", sid),
                  ("operation", "aws.greengrass#" + op), (":content-type", "application/json")],
                 json.dumps(body).encode())
reply, closed = raw(hello + request(1, "PublishToTopic", {
    "topic": "ipc/test/typed", "publishMessage": {"binaryMessage": {"message": 5}}}) +
    request(2, "SendConfigurationValidityReport", {
        "configurationValidityReport": {"status": "ACCEPTED", "deploymentId": 7}}), timeout=5)
check("a binaryMessage whose message is a number -> ServiceError naming the field",
      b"publishMessage.binaryMessage.message" in reply and not closed, (reply, closed))
check("a validity report whose deploymentId is a number -> InvalidArgumentsError naming it",
      b"configurationValidityReport.deploymentId" in reply and not closed, (reply, closed))
still = wait(lambda: len(lines("e2e.IpcSub", "received")) > len(got) + 3, 10)
check("the components' own connections are unaffected", bool(still))


way = [x for x in read(f"{WRITE}/../groved.out").splitlines() if "PauseComponent pauses with" in x]
check("groved's log says how PauseComponent pauses (GROVE_DEPLOYMENT_FREEZER=%s)" % FREEZER,
      bool(way) and {"v2": "pauses with cgroup v2 cgroup.freeze" in way[-1]
                     and "v1 freezer" not in way[-1],
                     "signal": "pauses with SIGSTOP/SIGCONT (GROVE_DEPLOYMENT_FREEZER=signal)"
                     in way[-1]}.get(FREEZER, True), way)
ok = control("pause", "e2e.IpcPub")
check("PauseComponent of Pub (its policy lists it) -> answered, no error", ok.get("ok"), ok)
pubs = procs_of("pub")
check("... Pub's process is frozen", bool(pubs) and all_frozen(pubs),
      [(p, read(f"/proc/{p}/stat")[:80], read(f"/proc/{p}/cgroup")) for p in pubs])
time.sleep(1)  # what was in flight arrives
paused_at = latest()
time.sleep(2)
check("... its publishes stop (Sub receives nothing more from it)", latest() == paused_at,
      (paused_at, latest()))
check("... and it is still RUNNING (as Greengrass reports a paused component)",
      support.installed(gg).get("e2e.IpcPub", {}).get("lifecycleState") == "RUNNING",
      support.installed(gg).get("e2e.IpcPub"))
again_ = control("pause", "e2e.IpcPub")
check("PauseComponent of a paused component -> no error (as Greengrass)", again_.get("ok"), again_)
ok = control("resume", "e2e.IpcPub")
check("ResumeComponent of Pub -> answered, no error", ok.get("ok"), ok)
came = wait(lambda: latest() > paused_at + 3, 20)
check("... its publishes go on", bool(came), (paused_at, latest()))
check("... its process is no longer frozen", not any(paused_any(p) for p in procs_of("pub")))
no = control("resume", "e2e.IpcPub")
check("ResumeComponent of a running component -> InvalidArgumentsError (Greengrass': "
      "not paused)", "InvalidArgumentsError" in no.get("error", ""), no)
no = control("pause", "e2e.IpcSub")
check("PauseComponent of a component its policy does not list -> UnauthorizedError",
      no.get("error") == "aws.greengrass#UnauthorizedError", no)
check("... Sub not paused", not any(paused_any(p) for p in procs_of("sub")))
no = control("pause", "e2e.NoSuch")
check("PauseComponent of a component that does not exist -> ResourceNotFoundError",
      no.get("error") == "aws.greengrass#ResourceNotFoundError", no)
if FREEZER == "v2":
    # A paused component whose processes are killed meanwhile (v2 lets SIGKILL through a
    # frozen group; cgroup.kill ends every one, the run's shell too): the runner reaps its
    # run, runs it again (the restart rules) and removes its freeze leaf then, not at the
    # next start.
    ok = control("pause", "e2e.IpcFlaky")
    flaky = procs_of("flaky")
    leaf = v2_cgroup(flaky[0]) if flaky else None
    check("PauseComponent of Flaky -> frozen in its freeze leaf",
          ok.get("ok") and all_frozen(flaky) and "/grove-freeze-" in (leaf or ""), (ok, leaf))
    if leaf:
        with open(f"{leaf}/cgroup.kill", "w") as f:
            f.write("1")
        again = wait(lambda: len(lines("e2e.IpcFlaky", "runs")) >= 3 and
                     support.installed(gg).get("e2e.IpcFlaky", {}).get("lifecycleState")
                     == "RUNNING", 30)
        check("... its processes killed: run again (RUNNING), not paused",
              bool(again) and not any(paused_any(p) for p in procs_of("flaky")),
              (lines("e2e.IpcFlaky", "runs"), support.installed(gg).get("e2e.IpcFlaky")))
        check("... and its freeze leaf is removed (not left for the next start)",
              bool(wait(lambda: not os.path.exists(leaf), 20)), leaf)
# A deployment that removes a paused component still stops it (frozen processes ignore
# even SIGKILL until thawed).
ok = control("pause", "e2e.IpcFlaky")
flaky = procs_of("flaky")
check("PauseComponent of Flaky -> frozen", ok.get("ok") and bool(flaky) and
      all_frozen(flaky), (ok, flaky))
d5, status, reason = deploy({"greeting": "skip"}, action="SKIP_NOTIFY_COMPONENTS",
                            drop=["e2e.IpcFlaky"])
check("a deployment removing the paused Flaky -> COMPLETED", status == "COMPLETED",
      f"{status} {reason}")
gone = wait(lambda: not any(support.alive(p) for p in flaky), 20)
check("... its processes are gone", bool(gone), flaky)

unload = subprocess.run(CTL + ["unload", "shadow"], capture_output=True, text=True)
with open(f"{WORK}/e2e.IpcShadow/again", "w") as f:
    f.write("1")
again = wait(lambda: shadow_steps().get("again"), 20) or {}
check("without the shadow plugin: ServiceError saying so",
      again.get("error") == "aws.greengrass#ServiceError" and
      "shadow plugin" in (again.get("message") or ""), (again, unload.stdout + unload.stderr))
support.finish()
