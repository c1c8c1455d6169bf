#!/usr/bin/python3
"""Deployments applied on a running groved, with boto3 (issue 15).

Usage: deployments_test.py ENDPOINT CA_BUNDLE WRITE_DIR
Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. The core is thing core-1 in thing
group site. Real component processes: their pids, logs and work directories are checked.
Prints PASS/FAIL lines; exits 1 on any failure.
"""
import os
import signal
import sys

import botocore.exceptions

import support
from support import alive, check, client, finish, pid_in, read, thing_arn, wait

ENDPOINT, CA, WRITE = sys.argv[1], sys.argv[2], sys.argv[3]
THING = thing_arn("core-1")
WORKDIR = f"{WRITE}/plugins/deployment/components/work"
LOGS = f"{WRITE}/logs/components"
gg = client("greengrassv2", ENDPOINT, CA)


def component(name, body):
    support.component(gg, name, body)


def deployment_done(did):
    def f():
        d = gg.get_deployment(deploymentId=did)
        return d if d["deploymentStatus"] in ("COMPLETED", "FAILED", "CANCELED") else None
    return wait(f)


def installed():
    return support.installed(gg)


def effective(did):
    return support.effective(gg, did)


def pid_of(name):
    return pid_in(WORKDIR, name)


component("e2e.Lib", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: echo $$ > {work:path}/pid; exec sleep 300
""")
component("e2e.Service", """ComponentDependencies:
  e2e.Lib: {VersionRequirement: '^1.0.0', DependencyType: HARD}
ComponentConfiguration:
  DefaultConfiguration: {Message: default, Other: o}
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      setenv: {GREETING: '{configuration:/Message}'}
      install: echo installed >> {work:path}/installs
      run: |
        echo $$ > {work:path}/pid
        echo "msg={configuration:/Message} env=$GREETING other={configuration:/Other} thing={iot:thingName} lib={e2e.Lib:work:path}"
        exec sleep 300
""")
component("e2e.Soft", """ComponentDependencies:
  e2e.Lib: {VersionRequirement: '^1.0.0', DependencyType: SOFT}
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: echo $$ > {work:path}/pid; exec sleep 300
""")
component("e2e.BadInstall", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: echo failing; exit 3
      run: exec sleep 300
""")
component("e2e.Crash", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: echo crashing; exit 1
      recover: echo recovered >> {work:path}/recovered
""")

# ---- a deployment: processes really run, configuration merged --------------------------
d1 = gg.create_deployment(targetArn=THING, deploymentName="first", components={
    "e2e.Service": {"componentVersion": "1.0.0",
                    "configurationUpdate": {"merge": '{"Message": "hello"}', "reset": ["/Other"]}}})
d = deployment_done(d1["deploymentId"])
check("CreateDeployment (Service with its HARD dependency Lib) -> COMPLETED, SUCCEEDED on the core",
      d and d["deploymentStatus"] == "COMPLETED"
      and effective(d1["deploymentId"]).get("coreDeviceExecutionStatus") == "SUCCEEDED",
      (d, effective(d1["deploymentId"])))
ic = installed()
check("ListInstalledComponents -> Service (root) and Lib (dependency) RUNNING",
      {n: (c["lifecycleState"], c["isRoot"]) for n, c in ic.items()}
      == {"e2e.Service": ("RUNNING", True), "e2e.Lib": ("RUNNING", False)}, ic)
svc_pid = wait(lambda: pid_of("e2e.Service"))
lib_pid = wait(lambda: pid_of("e2e.Lib"))
check("the Service and Lib processes run (their pids alive)", alive(svc_pid) and alive(lib_pid),
      (svc_pid, lib_pid))
line = wait(lambda: "msg=" in read(f"{LOGS}/e2e.Service.log") and read(f"{LOGS}/e2e.Service.log"))
check("the log shows the merged configuration through {configuration:/Message} and setenv, "
      "{iot:thingName} and a dependency's {e2e.Lib:work:path}",
      line and f"msg=hello env=hello other=o thing=core-1 lib={WORKDIR}/e2e.Lib" in line, line)
check("install ran once", read(f"{WORKDIR}/e2e.Service/installs") == "installed\n",
      read(f"{WORKDIR}/e2e.Service/installs"))

# ---- the next revision resets /Message: the component restarts with the default --------
d2 = gg.create_deployment(targetArn=THING, components={
    "e2e.Service": {"componentVersion": "1.0.0",
                    "configurationUpdate": {"reset": ["/Message"]}}})
d = deployment_done(d2["deploymentId"])
check("a second deployment -> COMPLETED; the first one INACTIVE",
      d and d["deploymentStatus"] == "COMPLETED" and d["revisionId"] == "2"
      and gg.get_deployment(deploymentId=d1["deploymentId"])["deploymentStatus"] == "INACTIVE", d)
new_pid = wait(lambda: pid_of("e2e.Service") != svc_pid and pid_of("e2e.Service"))
log = wait(lambda: "msg=default" in read(f"{LOGS}/e2e.Service.log") and read(f"{LOGS}/e2e.Service.log"))
check("reset /Message: Service restarted (new pid, old one gone) with msg=default env=default",
      new_pid and alive(new_pid) and not alive(svc_pid) and log and "msg=default env=default" in log,
      (svc_pid, new_pid, log))
check("... Lib, unchanged, kept its process", pid_of("e2e.Lib") == lib_pid and alive(lib_pid))
check("... and install did not run again (same version)",
      read(f"{WORKDIR}/e2e.Service/installs") == "installed\n")

# ---- a HARD dependency that restarts restarts its dependant ----------------------------
svc_pid, lib_pid = pid_of("e2e.Service"), pid_of("e2e.Lib")
d2b = gg.create_deployment(targetArn=THING, components={
    "e2e.Service": {"componentVersion": "1.0.0", "configurationUpdate": {"reset": ["/Message"]}},
    "e2e.Lib": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": '{"x": 1}'}}})
d = deployment_done(d2b["deploymentId"])
new_lib = wait(lambda: pid_of("e2e.Lib") != lib_pid and pid_of("e2e.Lib"))
new_svc = wait(lambda: pid_of("e2e.Service") != svc_pid and pid_of("e2e.Service"))
check("Lib's configuration changed: Lib restarts, and Service (HARD on Lib) with it",
      d and d["deploymentStatus"] == "COMPLETED" and new_lib and new_svc
      and alive(new_lib) and alive(new_svc) and not alive(lib_pid) and not alive(svc_pid),
      (d, lib_pid, new_lib, svc_pid, new_svc))
check("... Lib is a root now", installed().get("e2e.Lib", {}).get("isRoot") is True, installed())

# ---- a HARD dependency that crashes and restarts restarts its dependants, SOFT ones not --
d2c = gg.create_deployment(targetArn=THING, components={
    "e2e.Service": {"componentVersion": "1.0.0", "configurationUpdate": {"reset": ["/Message"]}},
    "e2e.Lib": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": '{"x": 1}'}},
    "e2e.Soft": {"componentVersion": "1.0.0"}})
d = deployment_done(d2c["deploymentId"])
soft_pid = wait(lambda: pid_of("e2e.Soft"))
svc_pid, lib_pid = pid_of("e2e.Service"), pid_of("e2e.Lib")
check("Soft (SOFT on Lib) added; Service and Lib, unchanged, keep their processes",
      d and d["deploymentStatus"] == "COMPLETED" and alive(soft_pid) and svc_pid == new_svc
      and lib_pid == new_lib and alive(svc_pid) and alive(lib_pid), (d, soft_pid, svc_pid, lib_pid))
os.kill(lib_pid, signal.SIGKILL)  # Lib's run crashes: ERRORED, run again
new_lib = wait(lambda: pid_of("e2e.Lib") != lib_pid and pid_of("e2e.Lib"))
new_svc = wait(lambda: pid_of("e2e.Service") != svc_pid and pid_of("e2e.Service"))
ic = wait(lambda: (lambda i: all(c["lifecycleState"] == "RUNNING" for c in i.values()) and i)(installed()))
check("Lib killed: Lib runs again (new pid) and Service, HARD on it, restarts with it (new pid)",
      new_lib and new_svc and alive(new_lib) and alive(new_svc) and not alive(svc_pid),
      (lib_pid, new_lib, svc_pid, new_svc))
check("... Soft, SOFT on Lib, keeps its process", pid_of("e2e.Soft") == soft_pid and alive(soft_pid),
      (soft_pid, pid_of("e2e.Soft")))
check("... all three RUNNING again", ic and set(ic) == {"e2e.Service", "e2e.Lib", "e2e.Soft"}, ic)
# Two more crashes: Lib's third error makes it BROKEN; Service (HARD) stops with it, Soft runs on.
for _ in range(2):
    lib_pid = pid_of("e2e.Lib")
    os.kill(lib_pid, signal.SIGKILL)
    wait(lambda: installed().get("e2e.Lib", {}).get("lifecycleState") == "BROKEN"
         or (pid_of("e2e.Lib") != lib_pid and alive(pid_of("e2e.Lib"))))
ic = wait(lambda: (lambda i: i.get("e2e.Service", {}).get("lifecycleState") == "FINISHED" and i)(installed()))
check("Lib BROKEN (3 errors): Service, HARD on it, stopped with the reason; Soft keeps running",
      ic and ic["e2e.Lib"]["lifecycleState"] == "BROKEN"
      and ic["e2e.Service"].get("lifecycleStateDetails") == "stopped: its HARD dependency e2e.Lib is BROKEN"
      and not alive(new_svc) and pid_of("e2e.Soft") == soft_pid and alive(soft_pid), ic)

# ---- a failing install is rolled back -------------------------------------------------
d3 = gg.create_deployment(targetArn=THING, components={
    "e2e.Service": {"componentVersion": "1.0.0",
                    "configurationUpdate": {"merge": '{"Message": "third"}'}},
    "e2e.Lib": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": '{"x": 1}'}},
    "e2e.BadInstall": {"componentVersion": "1.0.0"}},
    deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"})
d = deployment_done(d3["deploymentId"])
e = effective(d3["deploymentId"])
check("a failing install -> FAILED with the reason and ROLLBACK_COMPLETE",
      d and d["deploymentStatus"] == "FAILED" and e.get("coreDeviceExecutionStatus") == "FAILED"
      and "e2e.BadInstall" in e.get("reason", "") and "install exited with code 3" in e.get("reason", "")
      and "ROLLBACK_COMPLETE" in e.get("reason", ""), (d, e))
ic = wait(lambda: (lambda i: "e2e.BadInstall" not in i and i)(installed()), 10)
rolled_pid = pid_of("e2e.Service")
check("... the previous set runs again: BadInstall gone, Service RUNNING with msg=default",
      ic and ic.get("e2e.Service", {}).get("lifecycleState") == "RUNNING" and alive(rolled_pid)
      and read(f"{LOGS}/e2e.Service.log").rstrip().splitlines()[-1].startswith("msg=default"),
      (ic, read(f"{LOGS}/e2e.Service.log")[-300:]))

# ---- configuration is cumulative: two deployments merging different keys ----------------
d3c = gg.create_deployment(targetArn=THING, components={
    "e2e.Service": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": '{"Other": "o2"}'}}})
d = deployment_done(d3c["deploymentId"])
d3d = gg.create_deployment(targetArn=THING, components={
    "e2e.Service": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": '{"Message": "m3"}'}}})
d = deployment_done(d3d["deploymentId"])
line = wait(lambda: (lambda last: last.startswith("msg=m3") and last)(
    read(f"{LOGS}/e2e.Service.log").rstrip().splitlines()[-1]))
check("merge {Other: o2}, then merge {Message: m3}: the component sees both "
      "({configuration:/Message}, setenv, {configuration:/Other})",
      d and d["deploymentStatus"] == "COMPLETED" and line and line.startswith("msg=m3 env=m3 other=o2 "),
      (d, read(f"{LOGS}/e2e.Service.log")[-300:]))

# ---- a run that goes BROKEN while its deployment applies fails it: rolled back ----------
svc_pid = pid_of("e2e.Service")
d3e = gg.create_deployment(targetArn=THING, components={
    "e2e.Service": {"componentVersion": "1.0.0"}, "e2e.Crash": {"componentVersion": "1.0.0"}},
    deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"})
d = wait(lambda: (lambda x: x["deploymentStatus"] == "FAILED" and x)(
    gg.get_deployment(deploymentId=d3e["deploymentId"])), 30)
e = effective(d3e["deploymentId"])
check("Crash's run goes BROKEN within the deployment's timeout -> FAILED naming it, ROLLBACK_COMPLETE",
      d and e.get("coreDeviceExecutionStatus") == "FAILED" and "e2e.Crash" in e.get("reason", "")
      and "BROKEN" in e.get("reason", "") and "ROLLBACK_COMPLETE" in e.get("reason", ""), (d, e))
ic = wait(lambda: (lambda i: "e2e.Crash" not in i and i)(installed()), 10)
check("... the previous set again: Crash gone, Service RUNNING with its process and m3/o2 kept",
      ic and ic.get("e2e.Service", {}).get("lifecycleState") == "RUNNING"
      and pid_of("e2e.Service") == svc_pid and alive(svc_pid)
      and read(f"{LOGS}/e2e.Service.log").rstrip().splitlines()[-1].startswith("msg=m3 env=m3 other=o2 "),
      (ic, svc_pid, pid_of("e2e.Service")))

# ---- a crash-looping component ends BROKEN --------------------------------------------
for f in (f"{LOGS}/e2e.Crash.log", f"{WORKDIR}/e2e.Crash/recovered"):
    if os.path.exists(f):
        os.remove(f)
d4 = gg.create_deployment(targetArn=THING, components={
    "e2e.Service": {"componentVersion": "1.0.0"}, "e2e.Crash": {"componentVersion": "1.0.0"}},
    deploymentPolicies={"failureHandlingPolicy": "DO_NOTHING"})
deployment_done(d4["deploymentId"])
state = wait(lambda: installed().get("e2e.Crash", {}).get("lifecycleState") == "BROKEN", 15)
check("a component whose run exits 1 three times -> BROKEN",
      state, installed().get("e2e.Crash"))
d = wait(lambda: (lambda x: x["deploymentStatus"] == "FAILED" and x)(
    gg.get_deployment(deploymentId=d4["deploymentId"])), 10)
e = effective(d4["deploymentId"])
check("... its deployment (DO_NOTHING) FAILED, not rolled back: Crash stays, BROKEN",
      d and "BROKEN" in e.get("reason", "") and "ROLLBACK" not in e.get("reason", "")
      and installed().get("e2e.Crash", {}).get("lifecycleState") == "BROKEN", (d, e))
check("... its three runs are in its log", read(f"{LOGS}/e2e.Crash.log").count("crashing") == 3,
      read(f"{LOGS}/e2e.Crash.log"))
check("... recover ran after each of the first two errors, not after the third",
      wait(lambda: read(f"{WORKDIR}/e2e.Crash/recovered") == "recovered\n" * 2, 5),
      read(f"{WORKDIR}/e2e.Crash/recovered"))
check("... GetCoreDevice -> UNHEALTHY",
      gg.get_core_device(coreDeviceThingName="core-1")["status"] == "UNHEALTHY")

# ---- cancel and delete with the client -------------------------------------------------
try:
    gg.delete_deployment(deploymentId=d3["deploymentId"])
    deleted = True
except botocore.exceptions.ClientError:
    deleted = False
check("DeleteDeployment of a FAILED deployment -> done", deleted)
gone = None
try:
    gg.get_deployment(deploymentId=d3["deploymentId"])
except botocore.exceptions.ClientError as ex:
    gone = ex.response["Error"]["Code"]
check("... GetDeployment then -> ResourceNotFoundException", gone == "ResourceNotFoundException", gone)
pages = list(gg.get_paginator("list_deployments").paginate(historyFilter="ALL",
                                                            PaginationConfig={"PageSize": 1}))
check("ListDeployments ALL through the paginator, one a page -> 8 left",
      sum(len(p["deployments"]) for p in pages) == 8 and len(pages) >= 3, pages)

finish()
