#!/usr/bin/python3
"""Resource limits and restarts of generic components, with boto3 (issue 15).

Usage: runtime_test.py first|rolled-back|partial|canceled ENDPOINT CA_BUNDLE WRITE_DIR
`first` deploys e2e.Lim (runWith.systemResourceLimits: its process's cgroup carries the
memory limit and CPU quota) and e2e.Other (no runWith: the plugin's
default_system_resource_limits, cpus 1.5, no memory limit), then a ROLLBACK
deployment adding e2e.Hog, which allocates past its memory limit: killed in its own cgroup,
recovered, BROKEN after three runs with "out of memory" in the reason, the deployment
FAILED and rolled back while the others keep their processes. runtime_test.sh then kills
groved with -9; `rolled-back` checks the rolled-back set runs again (new processes, the
limits kept) and makes a DO_NOTHING deployment fail half way (e2e.Other removed, e2e.New
started, e2e.BadInstall's install failing); after the next kill -9, `partial` checks that
exactly that set runs again, e2e.BadInstall listed ERRORED and not started, and cancels
a deployment while it applies: its run completes (SUCCEEDED). After the third kill -9,
`canceled` checks what that run left runs again, and that a deployment to the core's group
keeps it (the thing's set is its canceled deployment's, whose run completed).
Prints PASS/FAIL lines; exits 1 on any failure.
"""
import os
import sys

import support
from support import alive, check, client, pid_in, read, thing_arn, wait

PHASE, ENDPOINT, CA, WRITE = sys.argv[1:5]
THING = thing_arn("core-1")
WORKDIR = f"{WRITE}/plugins/deployment/components/work"
LIM_KB, HOG_KB = 65536, 32768
gg = client("greengrassv2", ENDPOINT, CA)


def installed():
    return support.installed(gg)


def pid_of(name):
    return pid_in(WORKDIR, name)


def lines(name, file):
    return len(read(f"{WORKDIR}/{name}/{file}").splitlines())


def deploy(components, policy="ROLLBACK", settled=("COMPLETED", "FAILED")):
    did = gg.create_deployment(targetArn=THING, components=components,
                               deploymentPolicies={"failureHandlingPolicy": policy})["deploymentId"]

    def done():
        d = gg.get_deployment(deploymentId=did)
        return d if d["deploymentStatus"] in settled else None
    d = wait(done, 60) or {}
    return d.get("deploymentStatus"), support.effective(gg, did).get("reason", "")


def cgroup_file(pid, controller, file):
    """The value of v1 `file` in `pid`'s cgroup of `controller`, or of its v2 counterpart
    (memory.max, cpu.max's quota) in `pid`'s v2 cgroup when no v1 hierarchy holds
    `controller` (a pure v2 host, as Debian 12 boots: cgroup_v2_vm_test runs this there).
    v2 files without a v1 counterpart (memory.swap.max) are read as they are."""
    v2 = {"memory.limit_in_bytes": "memory.max", "cpu.cfs_quota_us": "cpu.max"}
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        num, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(",") and file in v2:
            return path, read(f"/sys/fs/cgroup/{controller}{path}/{file}").strip()
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        num, ctrls, path = line.split(":", 2)
        if num == "0" and ctrls == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            return path, read(f"/sys/fs/cgroup{path}/{v2.get(file, file)}").split(" ")[0].strip()
    return "", ""


def is_v2(pid):
    """`pid`'s memory limit is a v2 one (no v1 hierarchy holds its memory controller)."""
    return not any("memory" in line.split(":", 2)[1].split(",")
                   for line in read(f"/proc/{pid}/cgroup").splitlines())


def unlimited(limit):
    """A memory limit that is none: v2's "max", v1's page-rounded 2^63-1."""
    return limit == "max" or (limit.isdigit() and int(limit) > 1 << 40)


def running(name):
    return wait(lambda: alive(pid_of(name)) and installed().get(name, {}).get("lifecycleState") == "RUNNING",
                30)


LIMITS = {"memory": LIM_KB, "cpus": 0.5}
LIM = {"componentVersion": "1.0.0", "runWith": {"systemResourceLimits": LIMITS}}
ONE = {"componentVersion": "1.0.0"}


def check_limits(when):
    pid = pid_of("e2e.Lim")
    path, limit = cgroup_file(pid, "memory", "memory.limit_in_bytes")
    check(f"{when}: e2e.Lim's run is in its own cgroup whose memory limit is the deployment's "
          f"{LIM_KB} KB", path.endswith("/e2e.Lim") and "/grove-components-" in path
          and limit == str(LIM_KB * 1024), f"pid {pid}: {path}: {limit}")
    path, quota = cgroup_file(pid, "cpu", "cpu.cfs_quota_us")
    check(f"{when}: ... and its CPU quota is cpus 0.5 (50000 us per 100000 us)",
          path.endswith("/e2e.Lim") and quota == "50000", f"{path}: {quota}")
    if is_v2(pid):
        # Else a v2 hog swaps instead (the file is there where swap is accounted).
        path, swap = cgroup_file(pid, "memory", "memory.swap.max")
        check(f"{when}: ... and it may not swap past it (v2 memory.swap.max 0)",
              swap == "0" or not os.path.exists(f"/sys/fs/cgroup{path}/memory.swap.max"),
              f"{path}: {swap}")


if PHASE == "first":
    def component(name, body):
        support.component(gg, name, body)

    sleeper = """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: echo $$ > {work:path}/pid; echo run >> {work:path}/runs; exec sleep 300
"""
    for name in ("e2e.Lim", "e2e.Other", "e2e.New"):
        component(name, sleeper)
    # Allocates (and writes) 256 MB, far past its limit: the kernel's OOM killer ends it.
    component("e2e.Hog", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      recover: echo recovered >> {work:path}/recovers
      run: echo run >> {work:path}/runs; exec python3 -c "a = b'x' * (256 << 20); import time; time.sleep(300)"
""")
    component("e2e.BadInstall", """ComponentDependencies:
  e2e.New: {VersionRequirement: '^1.0.0', DependencyType: SOFT}
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: echo install >> {work:path}/installs; exit 3
      run: echo $$ > {work:path}/pid; exec sleep 300
""")

    st, why = deploy({"e2e.Lim": LIM, "e2e.Other": ONE})
    check("a deployment of e2e.Lim (memory, cpus) and e2e.Other -> COMPLETED", st == "COMPLETED", f"{st} {why}")
    check("... both RUNNING", running("e2e.Lim") and running("e2e.Other"))
    check_limits("deployed")
    path, limit = cgroup_file(pid_of("e2e.Other"), "memory", "memory.limit_in_bytes")
    cpath, quota = cgroup_file(pid_of("e2e.Other"), "cpu", "cpu.cfs_quota_us")
    check("... e2e.Other (no runWith) has the plugin's default: its own cgroup, CPU quota 1.5 "
          "cores (150000 us), no memory limit", path.endswith("/e2e.Other") and quota == "150000"
          and unlimited(limit), f"{path}: {limit}; {cpath}: {quota}")
    lim, other = pid_of("e2e.Lim"), pid_of("e2e.Other")

    st, why = deploy({"e2e.Lim": LIM, "e2e.Other": ONE,
                      "e2e.Hog": {"componentVersion": "1.0.0",
                                  "runWith": {"systemResourceLimits": {"memory": HOG_KB}}}},
                      settled=("FAILED",))  # COMPLETED first, then FAILED late
    check("a ROLLBACK deployment adding e2e.Hog (memory 32 MB, allocating 256 MB) -> FAILED",
          st == "FAILED", f"{st} {why}")
    check("... its reason: e2e.Hog went BROKEN, out of memory, then ROLLBACK_COMPLETE",
          "e2e.Hog 1.0.0: run went BROKEN" in why and "out of memory (systemResourceLimits.memory 32768 KB)" in why
          and "ROLLBACK_COMPLETE" in why, why)
    check("... e2e.Hog ran three times, recover between (2 recovers)",
          lines("e2e.Hog", "runs") == 3 and lines("e2e.Hog", "recovers") == 2,
          f"{lines('e2e.Hog', 'runs')} runs, {lines('e2e.Hog', 'recovers')} recovers")
    check("... rolled back: e2e.Hog gone, e2e.Lim and e2e.Other kept their processes",
          "e2e.Hog" not in installed() and pid_of("e2e.Lim") == lim and alive(lim)
          and pid_of("e2e.Other") == other and alive(other), str(installed().keys()))

elif PHASE == "rolled-back":
    # (The journal lists them RUNNING at once: their second runs are what counts.)
    comps = wait(lambda: (lambda c: c if all(c.get(n, {}).get("lifecycleState") == "RUNNING"
                                             and lines(n, "runs") == 2 for n in ("e2e.Lim", "e2e.Other"))
                          else None)(installed()), 30)
    check("after kill -9 following the FAILED ROLLBACK deployment: e2e.Lim and e2e.Other run again",
          bool(comps), str({n: c["lifecycleState"] for n, c in installed().items()}))
    check("... with new processes (their second runs), alive",
          running("e2e.Lim") and running("e2e.Other") and lines("e2e.Lim", "runs") == 2
          and lines("e2e.Other", "runs") == 2,
          f"{lines('e2e.Lim', 'runs')} and {lines('e2e.Other', 'runs')} runs")
    check_limits("after the restart")
    check("... e2e.Hog not listed, not run again", "e2e.Hog" not in installed()
          and lines("e2e.Hog", "runs") == 3)
    lim = pid_of("e2e.Lim")
    st, why = deploy({"e2e.Lim": LIM, "e2e.New": ONE, "e2e.BadInstall": ONE}, policy="DO_NOTHING")
    check("a DO_NOTHING deployment of e2e.Lim, e2e.New and e2e.BadInstall (install fails) -> FAILED",
          st == "FAILED" and "e2e.BadInstall 1.0.0: install exited with code 3" in why
          and "ROLLBACK" not in why, f"{st} {why}")
    c = installed()
    check("... left as it is: e2e.Lim (same process) and e2e.New RUNNING, e2e.BadInstall ERRORED, "
          "e2e.Other removed",
          c.get("e2e.Lim", {}).get("lifecycleState") == "RUNNING" and pid_of("e2e.Lim") == lim
          and running("e2e.New") and c.get("e2e.BadInstall", {}).get("lifecycleState") == "ERRORED"
          and "e2e.Other" not in c and not alive(pid_of("e2e.Other")),
          str({n: x["lifecycleState"] for n, x in c.items()}))

elif PHASE == "partial":
    want = {"e2e.Lim": "RUNNING", "e2e.New": "RUNNING", "e2e.BadInstall": "ERRORED"}
    got = wait(lambda: (lambda c: c if {n: x["lifecycleState"] for n, x in c.items()} == want
                        and lines("e2e.New", "runs") == 2 else None)(installed()), 30)
    check("after kill -9 following the FAILED DO_NOTHING deployment: exactly e2e.Lim, e2e.New "
          "RUNNING and e2e.BadInstall ERRORED", bool(got),
          str({n: x["lifecycleState"] for n, x in installed().items()}))
    check("... e2e.Lim and e2e.New with new processes (third and second runs), alive",
          running("e2e.Lim") and running("e2e.New") and lines("e2e.Lim", "runs") == 3
          and lines("e2e.New", "runs") == 2,
          f"{lines('e2e.Lim', 'runs')} and {lines('e2e.New', 'runs')} runs")
    check_limits("after the second restart")
    check("... e2e.BadInstall not started again (its install ran once), its reason kept",
          lines("e2e.BadInstall", "installs") == 1
          and "install exited with code 3" in installed()["e2e.BadInstall"].get("lifecycleStateDetails", ""),
          f"{lines('e2e.BadInstall', 'installs')} installs")
    check("... e2e.Other not running again", lines("e2e.Other", "runs") == 2
          and not alive(pid_of("e2e.Other")))
    st, why = deploy({"e2e.Lim": ONE, "e2e.New": ONE})
    check("the next deployment (e2e.Lim without runWith) -> COMPLETED, e2e.BadInstall removed",
          st == "COMPLETED" and "e2e.BadInstall" not in installed(), f"{st} {why}")
    # COMPLETED may come before the fourth run's shell wrote its pid (the pid file still
    # names the third, ended): its cgroup is read once that run is the one alive.
    fourth = wait(lambda: lines("e2e.Lim", "runs") == 4 and alive(pid_of("e2e.Lim")), 30)
    path, limit = cgroup_file(pid_of("e2e.Lim"), "memory", "memory.limit_in_bytes")
    _, quota = cgroup_file(pid_of("e2e.Lim"), "cpu", "cpu.cfs_quota_us")
    check("... e2e.Lim restarted (its fourth run) with the default: no memory limit, CPU quota "
          "150000 us", fourth and running("e2e.Lim") and lines("e2e.Lim", "runs") == 4
          and unlimited(limit) and quota == "150000",
          f"{lines('e2e.Lim', 'runs')} runs; {path}: {limit}, {quota}")

    st, why = deploy({"e2e.Lim": ONE, "e2e.New": ONE, "e2e.Other": {
        "componentVersion": "1.0.0", "runWith": {"systemResourceLimits": {"memory": 1 << 41}}}})
    check("a memory limit past what a cgroup takes (2^41 KB) -> FAILED naming it, rolled back",
          st == "FAILED" and "e2e.Other" in why and "is past the 1 PiB a cgroup takes here" in why
          and "ROLLBACK_COMPLETE" in why and "e2e.Other" not in installed()
          and lines("e2e.Other", "runs") == 2 and running("e2e.Lim"), f"{st} {why}")
    # A deployment canceled while it applies (a 2 s install): the runner goes on, and what
    # it left is what runs after the next kill -9 (`canceled`).
    recipe = """RecipeFormatVersion: '2020-01-25'
ComponentName: e2e.Slow
ComponentVersion: '1.0.0'
Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: sleep 2
      run: echo $$ > {work:path}/pid; echo run >> {work:path}/runs; exec sleep 300
"""
    gg.create_component_version(inlineRecipe=recipe.encode())
    did = gg.create_deployment(targetArn=THING, components={"e2e.Lim": ONE, "e2e.New": ONE,
                                                            "e2e.Slow": ONE})["deploymentId"]
    # Canceled once its run took e2e.Slow in (a cancel before its preparation would keep
    # it from being applied at all).
    check("... e2e.Slow's install under way", wait(lambda: "e2e.Slow" in installed(), 30))
    gg.cancel_deployment(deploymentId=did)
    check("a deployment adding e2e.Slow (2 s install) canceled while it applies -> CANCELED",
          gg.get_deployment(deploymentId=did)["deploymentStatus"] == "CANCELED")
    check("... the core goes on: e2e.Slow RUNNING", running("e2e.Slow")
          and gg.get_deployment(deploymentId=did)["deploymentStatus"] == "CANCELED")
    ex = wait(lambda: support.effective(gg, did).get("coreDeviceExecutionStatus") == "SUCCEEDED"
              and "SUCCEEDED", 30)
    check("... its run completed: coreDeviceExecutionStatus SUCCEEDED (the core runs its set)",
          ex == "SUCCEEDED", support.effective(gg, did))

elif PHASE == "canceled":
    got = wait(lambda: all(lines(n, "runs") == r and alive(pid_of(n))
                           for n, r in (("e2e.Lim", 5), ("e2e.New", 3), ("e2e.Slow", 2))), 30)
    check("after kill -9 following the CANCELED deployment: e2e.Lim, e2e.New and e2e.Slow run "
          "again", bool(got) and set(installed()) == {"e2e.Lim", "e2e.New", "e2e.Slow"},
          f"{[(n, lines(n, 'runs')) for n in ('e2e.Lim', 'e2e.New', 'e2e.Slow')]} {list(installed())}")
    # The thing keeps the set its canceled deployment's run applied: a deployment to the
    # core's group resolves with it, not with the thing's last COMPLETED deployment's.
    slow = pid_of("e2e.Slow")
    gid = gg.create_deployment(targetArn=f"arn:aws:iot:{support.REGION}:{support.ACCOUNT}"
                               f":thinggroup/site", components={})["deploymentId"]
    st = support.settle(gg, gid).get("deploymentStatus")
    check("a deployment to the core's group -> COMPLETED, the thing's set kept: e2e.Lim, e2e.New "
          "and e2e.Slow (same process)",
          st == "COMPLETED" and set(installed()) == {"e2e.Lim", "e2e.New", "e2e.Slow"}
          and pid_of("e2e.Slow") == slow and alive(slow), (st, list(installed()), slow))

support.finish()
