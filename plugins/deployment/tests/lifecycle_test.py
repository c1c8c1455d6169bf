#!/usr/bin/python3
"""Generic components' life cycle steps, with boto3 (issue 15).

Usage: lifecycle_test.py first|restarted|reloaded|unprivileged|skipif|logs ENDPOINT CA_BUNDLE WRITE_DIR LOCAL_DIR
groved runs with broken_error_window 6 s and artifacts_file_dir LOCAL_DIR (tool.sh there).
`first`: e2e.Daemon's startup leaves two services (one in its process group, one in a
session of its own): upgraded to 2.0.0, shutdown runs once for 1.0.0 and both services
end before 2.0.0's start; e2e.Ordered's shutdown runs before its run is signalled;
e2e.Priv's RequiresPrivilege install runs as root, its run as runWith.posixUser nobody
(writing to its working directory, {work:path}: the write dir above it is groved's, 0700),
its Permission OWNER artifact a 0550 copy owned by root and nobody's group, which nobody
can run but neither write nor chmod; e2e.Exec runs its artifact directly (Permission Execute OWNER:
a 0550 copy, the stored file left 0444); e2e.Slow's run outlives its Timeout and is ended
(ERRORED, restarted);
e2e.Mode's Read ALL copy of the same artifact is its own (removed with Mode by the next
deployment); e2e.Flaky fails every 4 s: never three errors within 6 s, so never BROKEN
(three at once are BROKEN: deployments_test.py). Last, a deployment whose preparation is
refused (Exec's runWith.posixUser names no user) FAILS with the reason, the set unchanged.
`restarted` (after kill -9): Daemon 2.0.0 and Priv run again (the thing's last applied
deployment, the refused one newer), Priv's install not again; the start pruned Mode's
links and copy. `reloaded` (after `grovectl reload deployment`): Daemon's services run on;
removing Daemon runs its shutdown and ends them; Priv deployed again (same version) with
another posixUser spelling installs again. `unprivileged` (groved again with
allow_privileged_components: false): Priv runs again, a component with a RequiresPrivilege
install FAILS its deployment, naming the key, its install never run, the set rolled back.
`skipif`: an install skipped by `Skipif: onpath sh`, a run not skipped by `exists` of a
missing file, a run skipped by `exists /` (FINISHED, skipped), a shutdown skipped by
`exists /` when its component is removed; e2e.Arch, another
architecture's manifest before this machine's, runs this machine's life cycle with only
its artifacts linked. `logs` (groved with component_log_max_bytes 4096,
component_log_files 2): a run writing past the size has its log rotated into .1 and .2
(whole lines, each file within the size, the oldest dropped), held open by groved, and
made again after it is removed from outside.
Prints PASS/FAIL lines; exits 1 on any failure.
"""
import hashlib
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import support
from support import alive, check, client, read, thing_arn, wait

PHASE, ENDPOINT, CA, WRITE, LOCAL = sys.argv[1:6]
THING = thing_arn("core-1")
STATE = f"{WRITE}/plugins/deployment"
WORKDIR = f"{STATE}/components/work"
NOBODY = pwd.getpwnam("nobody").pw_uid
gg = client("greengrassv2", ENDPOINT, CA)
with open(f"{LOCAL}/tool.sh", "rb") as _f:
    # e2e.Mode's Read ALL copy of tool.sh (artifact_store::with_mode): 0444, root, root's group.
    MODE_COPY = (f"{STATE}/artifacts/modes/0444-{os.getuid()}-{os.getgid()}/"
                 f"{hashlib.sha256(_f.read()).hexdigest()}")


def installed():
    return support.installed(gg)


def work(name, file):
    return read(f"{WORKDIR}/{name}/{file}")


def pid_file(name, file):
    text = work(name, file).strip()
    return int(text) if text.isdigit() else 0


def as_nobody(path, script):
    """The output of sh -c `script` run as nobody (group: its own) with `path` open
    read-only as its descriptor $1 and a directory of nobody's as $2."""
    if not os.path.exists(path):
        return f"{path} missing"
    nobody = pwd.getpwnam("nobody")
    fd = os.open(path, os.O_RDONLY)
    scratch = tempfile.mkdtemp()
    try:
        os.chown(scratch, nobody.pw_uid, nobody.pw_gid)
        r = subprocess.run(["/bin/sh", "-c", script, "sh", str(fd), scratch], pass_fds=[fd],
                           user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
                           capture_output=True, text=True, timeout=20)
        return r.stdout + r.stderr
    finally:
        os.close(fd)
        shutil.rmtree(scratch, ignore_errors=True)


def deploy(components):
    did = gg.create_deployment(targetArn=THING, components=components)["deploymentId"]
    d = support.settle(gg, did)
    return d.get("deploymentStatus"), support.effective(gg, did).get("reason", "")


def daemon(version):
    support.component(gg, "e2e.Daemon", f"""Manifests:
  - Platform: {{os: linux}}
    Lifecycle:
      startup: |
        nohup sleep 300 >/dev/null 2>&1 &
        echo $! > {{work:path}}/bg.pid
        setsid sleep 301 >/dev/null 2>&1 </dev/null &
        echo $! > {{work:path}}/sid.pid
      shutdown: echo "shutdown {version}" >> {{work:path}}/shutdowns
""", version)


def state(name):
    return installed().get(name, {}).get("lifecycleState")


if PHASE == "first":
    daemon("1.0.0")
    daemon("2.0.0")
    support.component(gg, "e2e.Ordered", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: |
        trap 'echo term >> {work:path}/order; exit 0' TERM
        echo $$ > {work:path}/pid
        while true; do sleep 0.2; done
      shutdown: |
        echo shutdown >> {work:path}/order
        sleep 1
        echo shutdown-done >> {work:path}/order
""")
    support.component(gg, "e2e.Priv", f"""Manifests:
  - Platform: {{os: linux}}
    Artifacts:
      - Uri: file://{LOCAL}/tool.sh
        Permission: {{Read: OWNER, Execute: OWNER}}
    Lifecycle:
      install:
        RequiresPrivilege: true
        Script: id -u > {{work:path}}/install.uid; echo installed >> {{work:path}}/installs
      run: id -u > run.uid; echo $$ > pid; exec sleep 300
""")
    support.component(gg, "e2e.Exec", f"""Manifests:
  - Platform: {{os: linux}}
    Artifacts:
      - Uri: file://{LOCAL}/tool.sh
        Permission: {{Read: OWNER, Execute: OWNER}}
    Lifecycle:
      run: "{{artifacts:path}}/tool.sh {{work:path}}/tool.out; exec sleep 300"
""")
    # Its artifact's Read ALL copy (0444, groved's group) is its own: removed with it.
    support.component(gg, "e2e.Mode", f"""Manifests:
  - Platform: {{os: linux}}
    Artifacts:
      - Uri: file://{LOCAL}/tool.sh
        Permission: {{Read: ALL}}
    Lifecycle:
      run: exec sleep 300
""")
    support.component(gg, "e2e.Slow", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run:
        Timeout: 3
        Script: echo $$ >> {work:path}/runs; exec sleep 300
""")
    support.component(gg, "e2e.Flaky", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: echo run >> {work:path}/runs; sleep 4; exit 1
""")
    for name in ("e2e.Exec", "e2e.Priv", "e2e.Mode"):
        arn = f"arn:aws:greengrass:us-east-1:123456789012:components:{name}:versions:1.0.0"
        ready = wait(lambda: gg.describe_component(arn=arn)["status"]["componentState"]
                     != "REQUESTED" and gg.describe_component(arn=arn)["status"]["componentState"])
        check(f"{name}'s file:// artifact fetched -> DEPLOYABLE", ready == "DEPLOYABLE", ready)

    everything = {"e2e.Daemon": {"componentVersion": "1.0.0"},
                  "e2e.Ordered": {"componentVersion": "1.0.0"},
                  "e2e.Priv": {"componentVersion": "1.0.0", "runWith": {"posixUser": "nobody"}},
                  "e2e.Exec": {"componentVersion": "1.0.0"},
                  "e2e.Slow": {"componentVersion": "1.0.0"},
                  "e2e.Flaky": {"componentVersion": "1.0.0"},
                  "e2e.Mode": {"componentVersion": "1.0.0"}}
    status, reason = deploy(everything)
    check("a deployment of the seven -> COMPLETED", status == "COMPLETED", (status, reason))
    ic = installed()
    check("... Daemon (startup ended 0), Ordered, Priv and Exec RUNNING",
          all(ic.get(n, {}).get("lifecycleState") == "RUNNING"
              for n in ("e2e.Daemon", "e2e.Ordered", "e2e.Priv", "e2e.Exec")),
          {n: c.get("lifecycleState") for n, c in ic.items()})

    # startup: its services run on after it exited 0
    bg1 = wait(lambda: pid_file("e2e.Daemon", "bg.pid"))
    sid1 = wait(lambda: pid_file("e2e.Daemon", "sid.pid"))
    check("Daemon 1.0.0's two services run (one in its process group, one setsid)",
          alive(bg1) and alive(sid1) and os.getpgid(sid1) != os.getpgid(bg1), (bg1, sid1))

    # requiresPrivilege
    check("Priv's install (RequiresPrivilege) ran as groved's user (root)",
          wait(lambda: work("e2e.Priv", "install.uid")).strip() == str(os.getuid()),
          work("e2e.Priv", "install.uid"))
    check("... its run as runWith.posixUser nobody",
          wait(lambda: work("e2e.Priv", "run.uid")).strip() == str(NOBODY),
          work("e2e.Priv", "run.uid"))

    # Permission
    check("Exec ran its artifact directly (Permission Execute OWNER)",
          wait(lambda: work("e2e.Exec", "tool.out")) == "tool ran\n", work("e2e.Exec", "tool.out"))
    link = f"{STATE}/components/packages/artifacts/e2e.Exec/1.0.0/tool.sh"
    with open(f"{LOCAL}/tool.sh", "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stored = f"{STATE}/artifacts/sha256/{digest}"
    st = os.stat(link) if os.path.exists(link) else None
    check("... {artifacts:path}/tool.sh is mode 0550 (Read OWNER, Execute OWNER, given to the "
          "group), owned by groved's user and the component's group",
          st and (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o550, os.getuid(), os.getgid()),
          (oct(st.st_mode) if st else None, os.path.realpath(link)))
    plink = f"{STATE}/components/packages/artifacts/e2e.Priv/1.0.0/tool.sh"
    pst = os.stat(plink) if os.path.exists(plink) else None
    check("... the copy is 0550 root:nobody's group",
          pst and (pst.st_mode & 0o7777, pst.st_uid, pst.st_gid)
          == (0o550, os.getuid(), pwd.getpwnam("nobody").pw_gid),
          (oct(pst.st_mode), pst.st_uid, pst.st_gid) if pst else plink)
    # As nobody, through a descriptor root opened: groved's 0700 directories keep nobody
    # from reaching the path; the copy's own mode and owner are what is checked.
    tried = as_nobody(plink, 'f=/proc/self/fd/$1; if (echo x >> "$f" || chmod u+w "$f") '
                      '2>/dev/null; then echo written; else echo refused; fi; "$f" "$2/out"; cat "$2/out"')
    check("... nobody (Priv's runWith.posixUser) can run it but neither write nor chmod it",
          tried == "refused\ntool ran\n", tried)
    check("... Mode's Read ALL copy is its own (modes/0444-...)",
          os.path.exists(MODE_COPY), MODE_COPY)
    check("... the stored artifact, shared by versions, stays 0444",
          os.path.exists(stored) and os.stat(stored).st_mode & 0o7777 == 0o444,
          oct(os.stat(stored).st_mode) if os.path.exists(stored) else stored)

    # run Timeout
    first_slow = wait(lambda: pid_file("e2e.Slow", "runs"))
    details = wait(lambda: "exceeded its Timeout of 3 s" in
                   installed().get("e2e.Slow", {}).get("lifecycleStateDetails", "")
                   and installed()["e2e.Slow"], 30)
    check("Slow's run outlived its Timeout: ended, ERRORED with the reason",
          details and not alive(first_slow), (details, first_slow))
    check("... and restarted (its run started again)",
          wait(lambda: len(work("e2e.Slow", "runs").split()) >= 2, 30), work("e2e.Slow", "runs"))

    # errors within the window
    again = wait(lambda: len(work("e2e.Flaky", "runs").split()) >= 4, 60)
    check("Flaky failing every 4 s (never 3 errors within 6 s) still restarted a 4th time",
          again and state("e2e.Flaky") != "BROKEN",
          (work("e2e.Flaky", "runs"), state("e2e.Flaky")))

    # upgrade and removal: shutdown, then the processes
    ordered = pid_file("e2e.Ordered", "pid")
    status, reason = deploy({"e2e.Daemon": {"componentVersion": "2.0.0"},
                             "e2e.Priv": {"componentVersion": "1.0.0",
                                          "runWith": {"posixUser": "nobody"}},
                             "e2e.Exec": {"componentVersion": "1.0.0"}})
    check("Daemon upgraded to 2.0.0, Ordered, Slow, Flaky and Mode removed -> COMPLETED",
          status == "COMPLETED", (status, reason))
    check("... Daemon 1.0.0's shutdown ran once",
          wait(lambda: work("e2e.Daemon", "shutdowns")) == "shutdown 1.0.0\n",
          work("e2e.Daemon", "shutdowns"))
    bg2 = wait(lambda: pid_file("e2e.Daemon", "bg.pid") != bg1 and pid_file("e2e.Daemon", "bg.pid"))
    sid2 = wait(lambda: pid_file("e2e.Daemon", "sid.pid") != sid1
                and pid_file("e2e.Daemon", "sid.pid"))
    check("... its services ended (both), 2.0.0's run",
          not alive(bg1) and not alive(sid1) and alive(bg2) and alive(sid2),
          (bg1, sid1, bg2, sid2))
    check("... Daemon 2.0.0 RUNNING", state("e2e.Daemon") == "RUNNING", state("e2e.Daemon"))
    order = wait(lambda: len(work("e2e.Ordered", "order").split()) >= 3
                 and work("e2e.Ordered", "order").split())
    check("Ordered's shutdown ran to its end before its run was signalled",
          order and order[:3] == ["shutdown", "shutdown-done", "term"] and not alive(ordered),
          (order, ordered))
    check("Priv's install ran once", work("e2e.Priv", "installs") == "installed\n",
          work("e2e.Priv", "installs"))

    # A preparation refused: Exec's Permission copy is made for its runWith.posixUser's
    # group, and there is no such user. FAILED with the reason before anything changed;
    # the set runs on as it was (and after kill -9, the thing's last applied deployment
    # is what comes back, not this one: `restarted`).
    priv = pid_file("e2e.Priv", "pid")
    did = gg.create_deployment(targetArn=THING, components={
        "e2e.Daemon": {"componentVersion": "2.0.0"},
        "e2e.Priv": {"componentVersion": "1.0.0", "runWith": {"posixUser": "nobody"}},
        "e2e.Exec": {"componentVersion": "1.0.0",
                     "runWith": {"posixUser": "grove-no-such-user"}}})["deploymentId"]
    status = support.settle(gg, did).get("deploymentStatus")
    eff = support.effective(gg, did)
    check("a deployment whose preparation is refused (runWith.posixUser: no such user) -> "
          "FAILED, the reason in ListEffectiveDeployments",
          status == "FAILED" and eff.get("coreDeviceExecutionStatus") == "FAILED"
          and eff.get("reason", "").startswith("preparation: ")
          and "no user 'grove-no-such-user'" in eff.get("reason", ""), (status, eff))
    ic = installed()
    check("... nothing changed: Daemon 2.0.0, Priv (same process) and Exec RUNNING",
          ic.get("e2e.Daemon", {}).get("componentVersion") == "2.0.0"
          and all(ic.get(n, {}).get("lifecycleState") == "RUNNING"
                  for n in ("e2e.Daemon", "e2e.Priv", "e2e.Exec"))
          and alive(priv) and pid_file("e2e.Priv", "pid") == priv,
          ({n: c.get("lifecycleState") for n, c in ic.items()}, priv))

elif PHASE == "restarted":
    # The start pruned what removed versions left: Mode's links and its per-mode copy;
    # Exec's and Priv's (installed) stay.
    check("after kill -9: the removed e2e.Mode's per-mode artifact copy and links are gone",
          not os.path.exists(MODE_COPY)
          and not os.path.exists(f"{STATE}/components/packages/artifacts/e2e.Mode"),
          (MODE_COPY, os.listdir(f"{STATE}/artifacts/modes")))
    check("... the installed versions' copies stay (Exec's and Priv's, behind their links)",
          all(os.path.exists(f"{STATE}/components/packages/artifacts/{n}/1.0.0/tool.sh")
              for n in ("e2e.Exec", "e2e.Priv")),
          os.listdir(f"{STATE}/artifacts/modes"))
    priv = wait(lambda: state("e2e.Priv") == "RUNNING" and alive(pid_file("e2e.Priv", "pid"))
                and pid_file("e2e.Priv", "pid"), 30)
    check("after kill -9: Priv RUNNING again (a new process)", priv, installed())
    check("... its install (same version) did not run again",
          work("e2e.Priv", "installs") == "installed\n", work("e2e.Priv", "installs"))
    bg = wait(lambda: state("e2e.Daemon") == "RUNNING" and alive(pid_file("e2e.Daemon", "bg.pid"))
              and pid_file("e2e.Daemon", "bg.pid"), 30)
    sid = pid_file("e2e.Daemon", "sid.pid")
    check("... Daemon 2.0.0 RUNNING, its services started again", bg and alive(sid), (bg, sid))
    with open(f"{LOCAL}/daemon.pids", "w") as f:  # for `reloaded`
        f.write(f"{bg} {sid} {priv}")

elif PHASE == "reloaded":
    bg, sid, priv = (int(p) for p in read(f"{LOCAL}/daemon.pids").split())
    check("after a hot reload: Daemon RUNNING, its services run on (same pids)",
          alive(bg) and alive(sid) and wait(lambda: state("e2e.Daemon") == "RUNNING"),
          (bg, sid, installed()))
    status, reason = deploy({"e2e.Priv": {"componentVersion": "1.0.0",
                                          "runWith": {"posixUser": "nobody"}}})
    check("Daemon removed -> COMPLETED", status == "COMPLETED", (status, reason))
    check("... Daemon 2.0.0's shutdown ran (the new instance's)",
          wait(lambda: work("e2e.Daemon", "shutdowns").endswith("shutdown 2.0.0\n")),
          work("e2e.Daemon", "shutdowns"))
    check("... and its services ended", wait(lambda: not alive(bg) and not alive(sid)),
          (bg, sid))
    # The removal waited for the deployment the new instance applied again at its start.
    check("... the startup did not run again after the reload (its pid files unchanged)",
          (pid_file("e2e.Daemon", "bg.pid"), pid_file("e2e.Daemon", "sid.pid")) == (bg, sid),
          (bg, sid, pid_file("e2e.Daemon", "bg.pid"), pid_file("e2e.Daemon", "sid.pid")))
    check("... Priv kept its process and did not install again",
          alive(priv) and work("e2e.Priv", "installs") == "installed\n",
          (priv, work("e2e.Priv", "installs")))
    # The same version as another user (nobody's own group named): installed again.
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    status, reason = deploy({"e2e.Priv": {"componentVersion": "1.0.0",
                                          "runWith": {"posixUser": f"nobody:{group}"}}})
    check("Priv 1.0.0 again with posixUser nobody:<its group> -> COMPLETED",
          status == "COMPLETED", (status, reason))
    check("... its install ran again (the same version, another runWith.posixUser)",
          wait(lambda: work("e2e.Priv", "installs") == "installed\ninstalled\n"),
          work("e2e.Priv", "installs"))

elif PHASE == "unprivileged":
    # groved again with allow_privileged_components: false. Priv (installed: its privileged
    # install does not run again) and Exec run as before; a new component whose install
    # asks for RequiresPrivilege does not run it: its deployment FAILS naming the key, the
    # set rolled back.
    check("with allow_privileged_components: false, Priv (installed, its run not "
          "privileged) RUNNING again",
          bool(wait(lambda: state("e2e.Priv") == "RUNNING"
                    and alive(pid_file("e2e.Priv", "pid")), 30)), installed())
    support.component(gg, "e2e.Root", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install:
        RequiresPrivilege: true
        Script: id -u > {work:path}/install.uid
      run: exec sleep 300
""")
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name  # as `reloaded` left it
    status, reason = deploy({"e2e.Priv": {"componentVersion": "1.0.0",
                                          "runWith": {"posixUser": f"nobody:{group}"}},
                             "e2e.Root": {"componentVersion": "1.0.0"}})
    check("e2e.Root (a RequiresPrivilege install) -> FAILED, naming allow_privileged_components, "
          "ROLLBACK_COMPLETE",
          status == "FAILED" and "allow_privileged_components" in reason
          and "ROLLBACK_COMPLETE" in reason, (status, reason))
    check("... its privileged install never ran", not os.path.exists(f"{WORKDIR}/e2e.Root/install.uid"))
    check("... Priv's install did not run again",
          work("e2e.Priv", "installs") == "installed\ninstalled\n", work("e2e.Priv", "installs"))
    check("... the set rolled back: e2e.Root gone, Priv RUNNING",
          bool(wait(lambda: "e2e.Root" not in installed() and state("e2e.Priv") == "RUNNING", 30)),
          installed())

elif PHASE == "skipif":
    # Skipif: `onpath sh` holds, so e2e.Skip's install is skipped; `exists` of a missing
    # file does not, so its run runs; `exists /` holds, so e2e.SkipRun's run is skipped
    # (FINISHED, `skipped`).
    support.component(gg, "e2e.Skip", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      install:
        Skipif: onpath sh
        Script: echo installed > {work:path}/install.ran
      run:
        Skipif: exists /nonexistent-grove-skipif
        Script: echo $$ > pid; exec sleep 300
      shutdown:
        Skipif: exists /
        Script: echo ran > {work:path}/shutdown.ran
""")
    support.component(gg, "e2e.SkipRun", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run:
        Skipif: exists /
        Script: echo ran > run.ran; exec sleep 300
""")
    # The manifest by the whole platform: another architecture's manifest first (its own
    # tool.sh and other.txt), this machine's second. Its URIs sort after this machine's, so
    # linking every manifest's artifacts by name would leave the other tool.sh in place.
    machine = os.uname().machine
    here = {"x86_64": "amd64"}.get(machine, "arm" if machine.startswith("armv") else machine)
    other = "aarch64" if here != "aarch64" else "amd64"
    for d, files in (("p1-here", {"tool.sh": "echo here\n"}),
                     ("p2-other", {"tool.sh": "echo other\n", "other.txt": "x\n"})):
        os.makedirs(f"{LOCAL}/{d}", exist_ok=True)
        for f, text in files.items():
            with open(f"{LOCAL}/{d}/{f}", "w") as out:
                out.write(text)
    support.component(gg, "e2e.Arch", f"""Manifests:
  - Platform: {{os: linux, architecture: {other}}}
    Lifecycle:
      run: echo other-lifecycle > {{work:path}}/which; exec sleep 300
    Artifacts:
      - Uri: file://{LOCAL}/p2-other/tool.sh
      - Uri: file://{LOCAL}/p2-other/other.txt
  - Platform: {{os: linux, architecture: {here}}}
    Lifecycle:
      run: sh {{artifacts:path}}/tool.sh > {{work:path}}/which; exec sleep 300
    Artifacts:
      - Uri: file://{LOCAL}/p1-here/tool.sh
""")
    arn = "arn:aws:greengrass:us-east-1:123456789012:components:e2e.Arch:versions:1.0.0"
    check("e2e.Arch's artifacts fetched -> DEPLOYABLE",
          wait(lambda: gg.describe_component(arn=arn)["status"]["componentState"] == "DEPLOYABLE"))
    group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    status, reason = deploy({"e2e.Priv": {"componentVersion": "1.0.0",
                                          "runWith": {"posixUser": f"nobody:{group}"}},
                             "e2e.Skip": {"componentVersion": "1.0.0"},
                             "e2e.SkipRun": {"componentVersion": "1.0.0"},
                             "e2e.Arch": {"componentVersion": "1.0.0"}})
    check("e2e.Skip, e2e.SkipRun (Skipif steps) and e2e.Arch -> COMPLETED",
          status == "COMPLETED", (status, reason))
    arts = f"{STATE}/components/packages/artifacts/e2e.Arch/1.0.0"
    check(f"e2e.Arch ran the {here} manifest's life cycle with its own tool.sh (the {other} "
          "manifest came first)",
          wait(lambda: work("e2e.Arch", "which").strip() == "here", 30),
          (work("e2e.Arch", "which"), installed().get("e2e.Arch")))
    check(f"... {{artifacts:path}} has only the {here} manifest's artifacts",
          sorted(os.listdir(arts)) == ["tool.sh"] and read(f"{arts}/tool.sh") == "echo here\n",
          (os.listdir(arts), read(f"{arts}/tool.sh")))
    check("... Skip's install skipped (Skipif: onpath sh), its run RUNNING (Skipif: exists of a "
          "missing file)",
          bool(wait(lambda: state("e2e.Skip") == "RUNNING" and alive(pid_file("e2e.Skip", "pid")), 30))
          and not os.path.exists(f"{WORKDIR}/e2e.Skip/install.ran"), installed())
    skipped = installed().get("e2e.SkipRun", {})
    check("... SkipRun's run skipped (Skipif: exists /): FINISHED, skipped, never ran",
          skipped.get("lifecycleState") == "FINISHED"
          and skipped.get("lifecycleStateDetails") == "skipped"
          and not os.path.exists(f"{WORKDIR}/e2e.SkipRun/run.ran"), skipped)
    # e2e.Skip removed: its shutdown's Skipif (exists /) holds, so the shutdown does not
    # run; its run is ended all the same.
    run_pid = pid_file("e2e.Skip", "pid")
    status, reason = deploy({"e2e.Priv": {"componentVersion": "1.0.0",
                                          "runWith": {"posixUser": f"nobody:{group}"}},
                             "e2e.SkipRun": {"componentVersion": "1.0.0"},
                             "e2e.Arch": {"componentVersion": "1.0.0"}})
    check("e2e.Skip removed -> COMPLETED, its run ended, its shutdown skipped (Skipif: "
          "exists /, never ran)", status == "COMPLETED" and "e2e.Skip" not in installed()
          and bool(wait(lambda: not alive(run_pid), 30))
          and not os.path.exists(f"{WORKDIR}/e2e.Skip/shutdown.ran"), (status, reason))

elif PHASE == "logs":
    # groved runs with component_log_max_bytes 4096 and component_log_files 2: e2e.Chatty's
    # run writes 300 lines of 50 bytes (15000, three files and more), one stderr line, then
    # waits; its log is rotated into .1 and .2, the oldest lines dropped, each file within
    # 4096 bytes and of whole lines, the file held open by groved. Removed from outside, the
    # log is made again by the next line.
    support.component(gg, "e2e.Chatty", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      run: |
        echo $$ > {work:path}/pid
        i=0
        while [ $i -lt 300 ]; do
          printf 'out %04d %s\\n' "$i" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
          i=$((i + 1))
        done
        while [ ! -e {work:path}/drained ]; do sleep 0.1; done
        echo "chatty err" >&2
        echo written > {work:path}/written
        while [ ! -e {work:path}/go ]; do sleep 0.1; done
        echo "after the removal"
        exec sleep 300
""")
    status, reason = deploy({"e2e.Chatty": {"componentVersion": "1.0.0"}})
    check("e2e.Chatty -> COMPLETED", status == "COMPLETED", (status, reason))
    log = f"{WRITE}/logs/components/e2e.Chatty.log"
    files = [f"{log}.2", f"{log}.1", log]  # oldest first
    texts = lambda: [read(f) for f in files]  # noqa: E731

    def settled():
        # Its last stdout line (0299) and its stderr line reached the log.
        all_text = "".join(texts())
        return "out 0299 " in all_text and "[stderr] chatty err" in all_text
    # Its stderr line only once the log has its last stdout line: the two pipes are read
    # apart, so a stderr line written at once could land before a stdout backlog and be
    # rotated away with it.
    wait(lambda: "out 0299 " in "".join(texts()), 30)
    with open(f"{WORKDIR}/e2e.Chatty/drained", "w"):
        pass
    wait(lambda: work("e2e.Chatty", "written"), 30)
    check("... its 300 lines and its stderr line reached its log", bool(wait(settled, 30)),
          [len(t) for t in texts()])
    check("... rotated at component_log_max_bytes: .1 and .2 kept, no .3 (component_log_files 2)",
          os.path.exists(f"{log}.1") and os.path.exists(f"{log}.2")
          and not os.path.exists(f"{log}.3"), sorted(os.listdir(os.path.dirname(log))))
    sizes = [os.path.getsize(f) if os.path.exists(f) else -1 for f in files]
    check("... each file within 4096 bytes", all(0 <= n <= 4096 for n in sizes), sizes)
    check("... each file of whole lines (none split across two)",
          all(t.endswith("\n") and all(l.startswith(("out ", "[stderr] chatty err"))
                                        and (not l.startswith("out ") or len(l) == 49)
                                        for l in t.splitlines()) for t in texts()),
          [t[:60] + " ... " + t[-60:] for t in texts()])
    outs = [int(l.split()[1]) for t in texts() for l in t.splitlines() if l.startswith("out ")]
    check("... the newest lines kept in order, the oldest dropped",
          bool(outs) and outs[-1] == 299 and outs[0] > 0
          and outs == list(range(outs[0], 300)), outs[:3] + outs[-3:])

    def holds(pid):
        try:
            return any(os.readlink(f"/proc/{pid}/fd/{fd}") == log
                       for fd in os.listdir(f"/proc/{pid}/fd"))
        except OSError:  # gone meanwhile
            return False
    holders = [p for p in os.listdir("/proc") if p.isdigit() and holds(p)]
    check("... its log held open while it runs (not opened per line)", len(holders) == 1,
          holders)
    # Removed from outside (an operator's rm): the next line makes it again.
    os.remove(log)
    with open(f"{WORKDIR}/e2e.Chatty/go", "w"):
        pass
    check("its log removed from outside: the next line is written to a new one",
          wait(lambda: read(log) == "after the removal\n", 20) is True, read(log))

support.finish()
