#!/usr/bin/python3
"""DeleteDeployment does not change what the core runs (issue 15), with boto3.

Usage: delete_test.py first|restarted|rolled-back|replaced|queued|unanswered ENDPOINT CA_BUNDLE WRITE_DIR
`first` deploys e2e.A to the thing (D1), then e2e.A and e2e.B (D2, which makes D1
INACTIVE), and deletes D2: it is gone from GetDeployment, ListDeployments and
ListEffectiveDeployments, and both components keep their processes. delete_test.sh then
restarts groved; `restarted` checks that both run again (new processes, not only listed
RUNNING), that a deployment to the thing group keeps them beside its e2e.C, and that a
deployment to the thing whose e2e.B 2.0.0 fails to install rolls back to e2e.B 1.0.0, the
set the deleted D2 made. After a kill -9 of groved, `rolled-back` checks that this set runs
again. `replaced` checks that a deployment replaced by a newer one to its target while it
applied is interrupted (CANCELED, its waiting install ended) and the newer one proceeds, and
that a run that goes BROKEN after its deployment was replaced is recorded on it (FAILED).
`queued` checks that a deployment replaced while it waits for its turn behind another
target's never begins (CANCELED) and the newer one runs after the one ahead. `unanswered` (groved
restarted with three undecided changes of the group journaled and its start's group reads
unanswered) checks that the start's deployment work still runs the set again. Prints PASS/FAIL lines;
exits 1 on any failure.
"""
import os
import sys

import botocore.exceptions

import support
from support import alive, check, client, pid_in, read, thing_arn, wait

PHASE, ENDPOINT, CA, WRITE = sys.argv[1:5]
THING = thing_arn("core-1")
GROUP = THING.replace(":thing/core-1", ":thinggroup/site")
WORKDIR = f"{WRITE}/plugins/deployment/components/work"
ONE = {"componentVersion": "1.0.0"}
gg = client("greengrassv2", ENDPOINT, CA)


def installed():
    return support.installed(gg)


def runs(name):
    return len(read(f"{WORKDIR}/{name}/runs").splitlines())


def pid_of(name):
    return pid_in(WORKDIR, name)


def running(name, version="1.0.0"):
    """Whether `name` `version` is listed RUNNING and its run's process is alive."""
    c = installed().get(name, {})
    return (c.get("lifecycleState") == "RUNNING" and c.get("componentVersion") == version
            and alive(pid_of(name)))


def deploy(target, components, policy="ROLLBACK"):
    did = gg.create_deployment(targetArn=target, components=components,
                               deploymentPolicies={"failureHandlingPolicy": policy})["deploymentId"]

    def done():
        d = gg.get_deployment(deploymentId=did)
        return d if d["deploymentStatus"] in ("COMPLETED", "FAILED") else None
    d = wait(done, 60) or {}
    return did, d.get("deploymentStatus"), support.effective(gg, did).get("reason", "")


def states():
    return {n: (c["componentVersion"], c["lifecycleState"]) for n, c in installed().items()}


SLEEPER = """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: echo $$ > {work:path}/pid; echo run >> {work:path}/runs; exec sleep 300
"""

# A SLEEPER whose install waits for a gate file (the test opens it, or never does).
GATED = """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: echo $$ > {work:path}/install.pid; while [ ! -e {work:path}/gate ]; do sleep 0.1; done
      run: echo $$ > {work:path}/pid; echo run >> {work:path}/runs; exec sleep 300
"""

if PHASE == "first":
    for name in ("e2e.A", "e2e.B", "e2e.C"):
        support.component(gg, name, SLEEPER)
    support.component(gg, "e2e.B", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install: echo install >> {work:path}/installs; exit 3
      run: echo $$ > {work:path}/pid; echo run >> {work:path}/runs; exec sleep 300
""", version="2.0.0")
    d1, st, why = deploy(THING, {"e2e.A": ONE})
    check("D1 (e2e.A to the thing) -> COMPLETED", st == "COMPLETED", f"{st} {why}")
    d2, st, why = deploy(THING, {"e2e.A": ONE, "e2e.B": ONE})
    check("D2 (e2e.A and e2e.B to the thing) -> COMPLETED, both running",
          st == "COMPLETED" and wait(lambda: running("e2e.A") and running("e2e.B"), 30),
          f"{st} {why} {states()}")
    pids = pid_of("e2e.A"), pid_of("e2e.B")
    gg.delete_deployment(deploymentId=d2)
    try:
        gg.get_deployment(deploymentId=d2)
        gone = False
    except botocore.exceptions.ClientError as e:
        gone = e.response["Error"]["Code"] == "ResourceNotFoundException"
    check("DeleteDeployment of the COMPLETED D2 -> GetDeployment: ResourceNotFoundException", gone)
    listed = [d["deploymentId"] for p in gg.get_paginator("list_deployments").paginate(historyFilter="ALL")
              for d in p["deployments"]]
    check("... not in ListDeployments (ALL), D1 still is", d2 not in listed and d1 in listed, str(listed))
    check("... not in ListEffectiveDeployments", support.effective(gg, d2) == {}
          and support.effective(gg, d1) != {})
    check("... e2e.A and e2e.B keep running, same processes",
          running("e2e.A") and running("e2e.B") and (pid_of("e2e.A"), pid_of("e2e.B")) == pids,
          f"{states()} {pids}")

elif PHASE == "restarted":
    back = wait(lambda: running("e2e.A") and running("e2e.B") and runs("e2e.A") == 2
                and runs("e2e.B") == 2, 30)
    check("after a restart of groved: e2e.A and e2e.B (the deleted D2's set) run again, new "
          "processes alive", bool(back),
          f"{states()} runs {runs('e2e.A')} {runs('e2e.B')}, pids alive "
          f"{alive(pid_of('e2e.A'))} {alive(pid_of('e2e.B'))}")
    pids = pid_of("e2e.A"), pid_of("e2e.B")
    _, st, why = deploy(GROUP, {"e2e.C": ONE})
    check("a deployment of e2e.C to the thing group -> COMPLETED, e2e.C running",
          st == "COMPLETED" and wait(lambda: running("e2e.C"), 30), f"{st} {why} {states()}")
    check("... e2e.A and e2e.B (the deleted D2's) kept, same processes",
          running("e2e.A") and running("e2e.B") and (pid_of("e2e.A"), pid_of("e2e.B")) == pids,
          f"{states()} {pids}")
    _, st, why = deploy(THING, {"e2e.A": ONE, "e2e.B": {"componentVersion": "2.0.0"}})
    check("a deployment of e2e.B 2.0.0 (install exits 3) to the thing -> FAILED, ROLLBACK_COMPLETE",
          st == "FAILED" and "ROLLBACK_COMPLETE" in why and len(read(f"{WORKDIR}/e2e.B/installs").splitlines()) >= 1,
          f"{st} {why}")
    check("... rolled back to the set the deleted D2 made: e2e.A, e2e.B 1.0.0 and e2e.C running",
          bool(wait(lambda: running("e2e.A") and running("e2e.B") and running("e2e.C")
                    and set(installed()) == {"e2e.A", "e2e.B", "e2e.C"}, 30)), str(states()))
    with open(f"{WRITE}/../delete_test_runs", "w") as f:
        f.write(f"{runs('e2e.A')} {runs('e2e.B')} {runs('e2e.C')}\n")

elif PHASE == "rolled-back":
    before = [int(n) for n in read(f"{WRITE}/../delete_test_runs").split()]
    names = ("e2e.A", "e2e.B", "e2e.C")
    back = wait(lambda: all(running(n) and runs(n) == r + 1 for n, r in zip(names, before))
                and set(installed()) == set(names), 30)
    check("after kill -9 following the rolled-back deployment: e2e.A, e2e.B 1.0.0 and e2e.C "
          "run again (new processes)", bool(back) and len(before) == 3,
          f"{states()} runs {[runs(n) for n in names]} before {before}")

elif PHASE == "replaced":
    # R1 adds e2e.Gate, whose install waits for a gate file that never comes; while it waits
    # (R1 IN_PROGRESS), R2 to the same target replaces R1 (INACTIVE): R1 is interrupted (its
    # install ended, as Greengrass cancels the deployment a newer revision supersedes) and
    # ends CANCELED, saying so, and R2 proceeds: COMPLETED, e2e.Gate gone.
    support.component(gg, "e2e.Gate", GATED)
    kept = {"e2e.A": ONE, "e2e.B": ONE}
    r1 = gg.create_deployment(targetArn=THING, components={**kept, "e2e.Gate": ONE})["deploymentId"]
    installing = wait(lambda: support.effective(gg, r1).get("coreDeviceExecutionStatus") == "IN_PROGRESS"
                      and installed().get("e2e.Gate", {}).get("lifecycleState") == "NEW"
                      and pid_in(WORKDIR, "e2e.Gate") == 0
                      and int(read(f"{WORKDIR}/e2e.Gate/install.pid").strip() or 0), 30)
    check("R1 (adds e2e.Gate, whose install waits) -> IN_PROGRESS, e2e.Gate installing",
          bool(installing), f"{support.effective(gg, r1)} {states()}")
    r2 = gg.create_deployment(targetArn=THING, components=kept)["deploymentId"]
    check("R2 to the same target -> R1 INACTIVE",
          gg.get_deployment(deploymentId=r1)["deploymentStatus"] == "INACTIVE")
    d = support.settle(gg, r2) or {}
    check("R2 -> COMPLETED without the gate opening, e2e.Gate gone, e2e.A and e2e.B running",
          d.get("deploymentStatus") == "COMPLETED"
          and bool(wait(lambda: "e2e.Gate" not in installed() and running("e2e.A")
                        and running("e2e.B"), 30)), f"{d.get('deploymentStatus')} {states()}")
    check("... e2e.Gate's install was ended (interrupted), not left waiting",
          bool(installing) and not alive(installing), installing)
    e1 = wait(lambda: (lambda e: e if e.get("coreDeviceExecutionStatus") not in
                       ("IN_PROGRESS", "QUEUED") else None)(support.effective(gg, r1)), 30) \
        or support.effective(gg, r1)
    check("R1, replaced while it applied: CANCELED, its reason saying it was interrupted and "
          "where",
          e1.get("coreDeviceExecutionStatus") == "CANCELED" and "interrupted" in e1.get("reason", "")
          and "e2e.Gate" in e1.get("reason", "") and r2 in e1.get("reason", ""),
          str(e1))
    # A late BROKEN after a replacement: L1 starts e2e.Crash (its run fails 5 s after each
    # start) and is COMPLETED; L2 to the same target (e2e.Crash unchanged, still running)
    # replaces it. e2e.Crash goes BROKEN within L1's timeout (60 s): recorded on L1 (FAILED,
    # not rolled back: L2 owns the set), L2 stays COMPLETED.
    support.component(gg, "e2e.Crash", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: echo run >> {work:path}/runs; sleep 5; exit 1
""")
    l1, st1, why1 = deploy(THING, {**kept, "e2e.Crash": ONE})
    check("L1 (adds e2e.Crash) -> COMPLETED", st1 == "COMPLETED", (st1, why1))
    l2, st2, why2 = deploy(THING, {**kept, "e2e.Crash": ONE})
    check("L2 to the same target (e2e.Crash unchanged) -> COMPLETED", st2 == "COMPLETED",
          (st2, why2))
    broken = wait(lambda: installed().get("e2e.Crash", {}).get("lifecycleState") == "BROKEN", 50)
    check("... e2e.Crash goes BROKEN", broken, states())
    e1 = wait(lambda: (lambda e: e if e.get("coreDeviceExecutionStatus") == "FAILED" else None)(
        support.effective(gg, l1)), 20) or support.effective(gg, l1)
    check("L1, replaced, its run BROKEN within its timeout: recorded FAILED, not rolled back",
          e1.get("coreDeviceExecutionStatus") == "FAILED" and "BROKEN" in e1.get("reason", "")
          and "not rolled back" in e1.get("reason", ""), str(e1))
    check("... L2 stays COMPLETED, e2e.A and e2e.B running",
          gg.get_deployment(deploymentId=l2)["deploymentStatus"] == "COMPLETED"
          and running("e2e.A") and running("e2e.B"), states())
    _, st3, why3 = deploy(THING, kept)
    check("L3 (without e2e.Crash) -> COMPLETED", st3 == "COMPLETED", (st3, why3))
    with open(f"{WRITE}/../replaced_runs", "w") as f:  # for `unanswered`
        f.write(f"{runs('e2e.A')} {runs('e2e.B')}\n")

elif PHASE == "queued":
    # Q1 to the thing group waits for its turn behind G1 (to the thing), whose e2e.Gate2
    # install waits for a gate file; Q2 to the group replaces Q1 before its turn: Q1 never
    # begins (CANCELED, its reason saying so, its e2e.Q never run), and once the gate opens
    # G1 and then Q2 complete.
    support.component(gg, "e2e.Gate2", GATED)
    support.component(gg, "e2e.Q", SLEEPER)
    kept = {"e2e.A": ONE, "e2e.B": ONE}
    g1 = gg.create_deployment(targetArn=THING, components={**kept, "e2e.Gate2": ONE})["deploymentId"]
    installing = wait(lambda: support.effective(gg, g1).get("coreDeviceExecutionStatus") == "IN_PROGRESS"
                      and int(read(f"{WORKDIR}/e2e.Gate2/install.pid").strip() or 0), 30)
    check("G1 (adds e2e.Gate2, whose install waits) -> IN_PROGRESS, e2e.Gate2 installing",
          bool(installing), f"{support.effective(gg, g1)} {states()}")
    q1 = gg.create_deployment(targetArn=GROUP, components={"e2e.C": ONE, "e2e.Q": ONE})["deploymentId"]
    queued = wait(lambda: support.effective(gg, q1).get("coreDeviceExecutionStatus")
                  in ("QUEUED", "IN_PROGRESS"), 30)
    check("Q1 (to the thing group, adds e2e.Q) waits behind G1", bool(queued)
          and support.effective(gg, g1).get("coreDeviceExecutionStatus") == "IN_PROGRESS",
          f"{support.effective(gg, q1)} {states()}")
    q2 = gg.create_deployment(targetArn=GROUP, components={"e2e.C": ONE})["deploymentId"]
    e1 = wait(lambda: (lambda e: e if e.get("coreDeviceExecutionStatus") not in
                       ("IN_PROGRESS", "QUEUED") else None)(support.effective(gg, q1)), 30) \
        or support.effective(gg, q1)
    check("Q1, replaced by Q2 before its turn: CANCELED while G1 still installs, its reason "
          "saying it never began",
          e1.get("coreDeviceExecutionStatus") == "CANCELED" and q2 in e1.get("reason", "")
          and "before its turn" in e1.get("reason", "")
          and support.effective(gg, g1).get("coreDeviceExecutionStatus") == "IN_PROGRESS",
          f"{e1} G1 {support.effective(gg, g1)}")
    with open(f"{WORKDIR}/e2e.Gate2/gate", "w"):
        pass
    d = support.settle(gg, g1) or {}
    check("the gate opens: G1 -> COMPLETED", d.get("deploymentStatus") == "COMPLETED",
          f"{d.get('deploymentStatus')} {support.effective(gg, g1)}")
    d = support.settle(gg, q2) or {}
    check("... then Q2 -> COMPLETED; e2e.Q was never installed nor run",
          d.get("deploymentStatus") == "COMPLETED" and "e2e.Q" not in installed()
          and not os.path.exists(f"{WORKDIR}/e2e.Q/runs") and running("e2e.C")
          and running("e2e.Gate2"), f"{d.get('deploymentStatus')} {states()}")
    _, st, why = deploy(THING, kept)
    check("G2 (without e2e.Gate2) -> COMPLETED", st == "COMPLETED", (st, why))

elif PHASE == "unanswered":
    # groved restarted with three changes of the group left undecided in its journal and a
    # kernel that does not answer the start's reads (start_group_read_timeout: 1): the
    # first change's reads time out, the other two are kept unread, and the start's own
    # work goes on: e2e.A and e2e.B (R2's set) run again, new processes.
    before = [int(n) for n in read(f"{WRITE}/../replaced_runs").split()]
    back = wait(lambda: running("e2e.A") and running("e2e.B")
                and [runs("e2e.A"), runs("e2e.B")] == [n + 1 for n in before], 30)
    check("a start whose group reads go unanswered still starts its deployment work: e2e.A "
          "and e2e.B run again (new processes)", bool(back),
          f"{states()} runs {runs('e2e.A')} {runs('e2e.B')} before {before}")

support.finish()
