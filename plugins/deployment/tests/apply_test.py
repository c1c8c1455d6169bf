#!/usr/bin/python3
"""How deployments apply on a running groved, with boto3 (issue 15): a dependency upgrade,
failures that trigger the rollback, and failures found before anything changes.

Usage: apply_test.py upgrade|timeouts|resolution ENDPOINT CA_BUNDLE WRITE_DIR
The core is thing core-1 in thing group site. Environment: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, GROVECTL (its control socket in GROVE_CONTROL_SOCKET).
`upgrade`: e2e.Lib 1.0.0 runs with e2e.Service (HARD on Lib) and e2e.Soft (SOFT on Lib);
Lib 1.1.0 deployed: Lib's old process gone, Service restarted after Lib's new run, Soft's
process kept. `timeouts`: a startup that never reports RUNNING within its Timeout, and an
install outliving its Timeout, each FAIL their deployment naming the step and the timeout,
ROLLBACK_COMPLETE, the previous set back with its processes, the step's processes gone.
`resolution`: a DELETED version and a version clashing with what the group keeps each
FAIL their deployment at once, the reason naming the component (GetDeployment FAILED,
grovectl's get showing the same reason), nothing on the core changed.
Prints PASS/FAIL lines; exits 1 on any failure.
"""
import json
import os
import re
import subprocess
import sys

import support
from support import alive, check, client, pid_in, read, thing_arn, wait

PHASE, ENDPOINT, CA, WRITE = sys.argv[1:5]
THING = thing_arn("core-1")
GROUP = "arn:aws:iot:us-east-1:123456789012:thinggroup/site"
WORKDIR = f"{WRITE}/plugins/deployment/components/work"
# Each run appends "<name> <pid>" here as it starts: which runs started again.
STARTS = f"{WRITE}/starts"
gg = client("greengrassv2", ENDPOINT, CA)


def component(name, body, version="1.0.0"):
    support.component(gg, name, body, version)


def installed():
    return {n: c["componentVersion"] for n, c in support.installed(gg).items()}


def states():
    return {n: c["lifecycleState"] for n, c in support.installed(gg).items()}


def pids(names):
    return {n: pid_in(WORKDIR, n) for n in names}


# groved's output: the runner's state lines ("deployment: e2e.Lib 1.1.0: RUNNING"), one
# actor's, so in the order the runner changed the states. The runs' own lines in STARTS
# may land in either order: a `run` is RUNNING once spawned.
GROVED_OUT = os.path.join(os.path.dirname(WRITE), "groved.out")
STATE_LINE = re.compile(r"deployment: (e2e\.\w+) (\S+): ([A-Z]+)$")


def states_logged():
    out = []
    for line in read(GROVED_OUT).splitlines():
        m = STATE_LINE.search(line)
        if m:
            out.append(m.groups())
    return out


def starts():
    return [line.split() for line in read(STARTS).splitlines()]


def run_body(dependencies=""):
    return f"""{dependencies}Manifests:
  - Platform: {{os: linux}}
    Lifecycle:
      run: echo $$ > {{work:path}}/pid; echo "$(basename {{work:path}}) $$" >> {STARTS}; exec sleep 300
"""


# The set `upgrade` leaves running (the thing's), and what the group keeps in `resolution`.
SET = {"e2e.Service": {"componentVersion": "1.0.0"}, "e2e.Soft": {"componentVersion": "1.0.0"},
       "e2e.Lib": {"componentVersion": "1.1.0"}}
SET_NAMES = sorted(SET)

if PHASE == "upgrade":
    component("e2e.Lib", run_body())
    component("e2e.Service", run_body(
        "ComponentDependencies:\n  e2e.Lib: {VersionRequirement: '^1.0.0', DependencyType: HARD}\n"))
    component("e2e.Soft", run_body(
        "ComponentDependencies:\n  e2e.Lib: {VersionRequirement: '^1.0.0', DependencyType: SOFT}\n"))
    d1 = gg.create_deployment(targetArn=THING, components=dict(SET, **{
        "e2e.Lib": {"componentVersion": "1.0.0"}}))
    d = support.settle(gg, d1["deploymentId"])
    before = wait(lambda: (lambda p: all(alive(x) for x in p.values()) and p)(pids(SET_NAMES)))
    check("Lib 1.0.0 with Service (HARD on it) and Soft (SOFT on it) -> COMPLETED, all three run",
          d.get("deploymentStatus") == "COMPLETED" and before
          and installed() == {"e2e.Lib": "1.0.0", "e2e.Service": "1.0.0", "e2e.Soft": "1.0.0"},
          (d, before, installed()))
    component("e2e.Lib", run_body(), "1.1.0")
    mark = len(starts())
    logged = len(states_logged())
    d2 = gg.create_deployment(targetArn=THING, components=SET)
    d = support.settle(gg, d2["deploymentId"])
    for name in ("e2e.Lib", "e2e.Service"):  # each new run's pid, or its old one
        wait(lambda: pid_in(WORKDIR, name) != before[name] and alive(pid_in(WORKDIR, name)))
    after = pids(SET_NAMES)
    check("Lib 1.1.0 deployed -> COMPLETED, Lib 1.1.0 installed",
          d.get("deploymentStatus") == "COMPLETED" and installed().get("e2e.Lib") == "1.1.0",
          (d, installed()))
    check("... Lib's new version runs (new pid), its old process gone",
          after["e2e.Lib"] != before["e2e.Lib"] and alive(after["e2e.Lib"])
          and not alive(before["e2e.Lib"]), (before, after))
    new = starts()[mark:]
    lib_running, service_starting = ("e2e.Lib", "1.1.0", "RUNNING"), ("e2e.Service", "1.0.0", "STARTING")
    log = wait(lambda: (lambda l: lib_running in l and service_starting in l and l)(
        states_logged()[logged:])) or states_logged()[logged:]
    check("... Service, HARD on Lib, restarted (new pid, old gone) after Lib's new run started",
          after["e2e.Service"] != before["e2e.Service"] and not alive(before["e2e.Service"])
          and ["e2e.Lib", str(after["e2e.Lib"])] in new
          and ["e2e.Service", str(after["e2e.Service"])] in new
          and lib_running in log and service_starting in log
          and log.index(lib_running) < len(log) - 1 - log[::-1].index(service_starting),
          (before, after, new, log))
    check("... Soft, SOFT on Lib, kept its process (same pid, not started again)",
          pids(["e2e.Soft"])["e2e.Soft"] == before["e2e.Soft"] and alive(before["e2e.Soft"])
          and not any(n == "e2e.Soft" for n, _ in new), (before, pids(["e2e.Soft"]), new))

elif PHASE == "timeouts":
    component("e2e.SlowStart", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      startup: {Script: 'echo $$ > {work:path}/startup.pid; exec sleep 300', Timeout: 2}
""")
    component("e2e.LongInstall", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: {Script: 'sleep 300 & echo $! > {work:path}/sleep.pid; wait', Timeout: 2}
      run: exec sleep 300
""")
    for name, file, why in (("e2e.SlowStart", "startup.pid", "e2e.SlowStart 1.0.0: not RUNNING within 2 s"),
                            ("e2e.LongInstall", "sleep.pid", "e2e.LongInstall 1.0.0: install did not end within 2 s")):
        before = pids(SET_NAMES)
        versions = installed()
        dep = gg.create_deployment(targetArn=THING, components=dict(SET, **{name: {"componentVersion": "1.0.0"}}),
                                   deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"})
        d = support.settle(gg, dep["deploymentId"])
        e = support.effective(gg, dep["deploymentId"])
        check(f"{name} past its Timeout -> FAILED, the reason '{why}', ROLLBACK_COMPLETE",
              d.get("deploymentStatus") == "FAILED" and e.get("coreDeviceExecutionStatus") == "FAILED"
              and why in e.get("reason", "") and "ROLLBACK_COMPLETE" in e.get("reason", ""), (d, e))
        back = wait(lambda: installed() == versions and set(states().values()) == {"RUNNING"})
        check(f"... the previous set back: {versions}, RUNNING, with the same processes",
              back and pids(SET_NAMES) == before and all(alive(p) for p in before.values()),
              (versions, installed(), states(), before, pids(SET_NAMES)))
        text = read(f"{WORKDIR}/{name}/{file}").strip()
        step_pid = int(text) if text.isdigit() else 0
        check(f"... the step's process ({file}) gone", step_pid > 0 and wait(lambda: not alive(step_pid), 5),
              step_pid)

elif PHASE == "resolution":
    # What the group keeps: e2e.Pin 1.0.0 (the thing will ask for 2.0.0).
    component("e2e.Pin", run_body())
    component("e2e.Pin", run_body(), "2.0.0")
    g = gg.create_deployment(targetArn=GROUP, components={"e2e.Pin": {"componentVersion": "1.0.0"}})
    d = support.settle(gg, g["deploymentId"])
    running = SET_NAMES + ["e2e.Pin"]
    before = wait(lambda: (lambda p: all(alive(x) for x in p.values()) and p)(pids(running)))
    check("the group's deployment of e2e.Pin 1.0.0 -> COMPLETED, Pin runs beside the thing's set",
          d.get("deploymentStatus") == "COMPLETED" and before, (d, before))
    versions = installed()
    component("e2e.Recalled", run_body())
    recalled = "arn:aws:greengrass:us-east-1:123456789012:components:e2e.Recalled:versions:1.0.0"
    r = subprocess.run([os.environ["GROVECTL"], "components", "guidance", recalled, "DELETED",
                        "--message", "recalled"], capture_output=True, text=True)
    check("grovectl components guidance e2e.Recalled 1.0.0 DELETED -> exit 0", r.returncode == 0,
          r.stdout + r.stderr)
    for what, name, extra, names in (
            ("a DELETED version", "e2e.Recalled", {"e2e.Recalled": {"componentVersion": "1.0.0"}},
             ["e2e.Recalled"]),
            ("a version clashing with the group's", "e2e.Pin", {"e2e.Pin": {"componentVersion": "2.0.0"}},
             ["e2e.Pin", "thinggroup/site", "thing/core-1"])):
        starts_before = len(starts())
        dep = gg.create_deployment(targetArn=THING, components=dict(SET, **extra))
        did = dep["deploymentId"]
        d = gg.get_deployment(deploymentId=did)  # no wait: resolution fails it at once
        e = support.effective(gg, did)
        reason = e.get("reason", "")
        check(f"{what} ({name}) -> GetDeployment FAILED at once, ListEffectiveDeployments FAILED "
              f"with the reason naming {', '.join(names)}",
              d["deploymentStatus"] == "FAILED" and e.get("coreDeviceExecutionStatus") == "FAILED"
              and all(n in reason for n in names), (d, e))
        print(f"  (reason: {reason})")
        check("... nothing on the core changed: the same versions and processes",
              installed() == versions and pids(running) == before
              and all(alive(x) for x in before.values()),
              (versions, installed(), before, pids(running)))
        r = subprocess.run([os.environ["GROVECTL"], "deployments", "get", did],
                           capture_output=True, text=True)
        got = json.loads(r.stdout) if r.returncode == 0 else {}
        check("... grovectl deployments get: FAILED, the core's FAILED, the same reason",
              got.get("deploymentStatus") == "FAILED" and got.get("coreDeviceExecutionStatus") == "FAILED"
              and got.get("reason") == reason, (r.stdout, r.stderr))
        # Anything the core did would show by now: a later deployment waits for this one.
        probe = gg.create_deployment(targetArn=THING, components=SET)
        p = support.settle(gg, probe["deploymentId"])
        check("... nor after the next deployment (of the set as it is) applied: no process started or ended",
              p.get("deploymentStatus") == "COMPLETED" and installed() == versions
              and pids(running) == before and all(alive(x) for x in before.values())
              and len(starts()) == starts_before,
              (p, versions, installed(), before, pids(running), starts()[starts_before:]))

support.finish()
