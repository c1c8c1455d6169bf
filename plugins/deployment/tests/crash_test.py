#!/usr/bin/python3
"""kill -9 of groved at each step of a deployment, with boto3 (issue 15).

Usage: crash_test.py PHASE ENDPOINT CA_BUNDLE WRITE_DIR GROVECTL
crash_test.sh launches groved with GROVE_DEPLOYMENT_CRASH_AT=<point>, runs `<point>`
(the set before deployed and checked, then the deployment that changes it created, its
id kept in WRITE_DIR/../crash.id; groved kills itself at the point), `<point>_crashed`
(groved dead: what the point left, read from the component files) and, once groved runs
again without the variable, `<point>_after`: the deployment's end, ListInstalledComponents'
exact set (names, versions, RUNNING), the exact processes of the components (by their
GROVE_COMPONENT_NAME and E2E_VERSION: one process per component, none of a removed one
or of an old version), and for the plugin point the kernel's heartbeat configuration
(grovectl status). The points, in order (each set builds on the last):
  stopped:   {A 1, B 1, K 1} -> {A 2, C 1, K 1}, killed once A 1 and B stopped, before A 2
             and C start; resumed: SUCCEEDED with the new set.
  startup:   -> {A 1, K 1, S 1}, killed once S's startup exited 0 leaving its service;
             resumed: that service killed at start, the startup run again, one service.
  plugin:    -> {A 2, K 1, grove.heartbeat (interval_ms 300)} over the profile's
             heartbeat (100 ms), killed once the kernel configured it; resumed: SUCCEEDED,
             the kernel's heartbeat at 300 ms (the kernel came back with the profile's).
  load:      -> {A 2, K 1, grove.heartbeat, grove.kv}, killed once the kernel loaded kv
             (not in the profile); resumed: the kernel without kv, the run loads it again.
  bootstrap: -> {A 1, Boot 1, K 1, grove.heartbeat} (kv unloaded), killed once Boot's
             bootstrap exited 0, before it is journaled; resumed: it runs again (at least
             once), SUCCEEDED.
  rollback:  -> {A 2, C 1, Fail 1 (install exits 3, after grove.heartbeat), K 1,
             grove.heartbeat (500 ms)} FAILS, killed while its rollback restores A 1;
             resumed: the deployment runs again, fails again, FAILED + ROLLBACK_COMPLETE
             with the set before it exactly, heartbeat at 300 ms again.
  reload:    -> grove.heartbeat 2.0.0 (its own build, a file:// artifact), killed once the
             kernel hot-reloaded it; resumed: the kernel back on the plugin directory's
             build, the run reloads it again: SUCCEEDED, heartbeat from 2.0.0's build.
Prints PASS/FAIL lines; exits 1 on any failure.
"""
import json
import os
import subprocess
import sys

import support
from support import alive, check, client, finish, read, thing_arn, wait

PHASE, ENDPOINT, CA, WRITE, GROVECTL = sys.argv[1:6]
THING = thing_arn("core-1")
WORKDIR = f"{WRITE}/plugins/deployment/components/work"
ID_FILE = f"{WRITE}/../crash.id"
MARKER = f"GROVE_COMPONENTS_ROOT={WRITE}/".encode()
gg = client("greengrassv2", ENDPOINT, CA)
HB = "grove.heartbeat"
KV = "grove.kv"
ARTIFACT_LIB = (f"{WRITE}/plugins/deployment/components/packages/artifacts/"
                f"{HB}/2.0.0/libheartbeat.so")


def v(version, **update):
    c = {"componentVersion": version}
    if update:
        c["configurationUpdate"] = {"merge": json.dumps(update)}
    return c


def installed():
    return {n: (c["componentVersion"], c["lifecycleState"]) for n, c in support.installed(gg).items()}


def procs():
    """Every live process of this test's components: {name: sorted [version, ...]}."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if not any(e.startswith(MARKER) for e in env) or not alive(int(p)):
            continue
        vals = dict(e.decode(errors="replace").split("=", 1) for e in env if b"=" in e)
        out.setdefault(vals.get("GROVE_COMPONENT_NAME", "?"), []).append(vals.get("E2E_VERSION", "?"))
    return {k: sorted(x) for k, x in out.items()}


def status():
    r = subprocess.run([GROVECTL, "status", "--json"], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def beating():
    return status().get("details", {}).get("heartbeat.beating", "")


def work(name, file):
    return read(f"{WORKDIR}/{name}/{file}")


def deploy(components):
    did = gg.create_deployment(targetArn=THING, components=components)["deploymentId"]
    d = support.settle(gg, did)
    return d.get("deploymentStatus"), support.effective(gg, did)


def create(components):
    """Creates the deployment groved is to die in; its id kept for the `_after` phase."""
    for name in os.listdir(WORKDIR) if os.path.isdir(WORKDIR) else []:
        for f in os.listdir(f"{WORKDIR}/{name}"):
            if f.startswith("ready."):
                os.unlink(f"{WORKDIR}/{name}/{f}")
    did = gg.create_deployment(targetArn=THING, components=components)["deploymentId"]
    with open(ID_FILE, "w") as f:
        f.write(did)


def expect_set(what, comps, running):
    """The deployment settled as before it, ListInstalledComponents exactly `comps`
    ({name: version}, every one RUNNING) and the processes exactly one per generic one
    in `running` at its version."""
    want = {n: (ver, "RUNNING") for n, ver in comps.items()}
    got = wait(lambda: installed() == want and installed(), 30) or installed()
    check(f"{what}: ListInstalledComponents exactly {sorted(comps.items())}, all RUNNING",
          got == want, got)
    want_p = {n: [comps[n]] for n in running}
    got_p = wait(lambda: procs() == want_p and procs(), 20) or procs()
    check(f"{what}: exactly one process of each of {running} at its version, no other",
          got_p == want_p, got_p)


def outcome(did, status, execution, rollback=False):
    d = support.settle(gg, did, 90)
    e = support.effective(gg, did)
    ok = (d.get("deploymentStatus") == status and e.get("coreDeviceExecutionStatus") == execution
          and ("ROLLBACK_COMPLETE" in e.get("reason", "")) == rollback)
    return ok, (d.get("deploymentStatus"), e.get("coreDeviceExecutionStatus"), e.get("reason"))


def resumed_id():
    return read(ID_FILE).strip()


def killed_at(point):
    """Whether groved's last words were the crash point's (written at once; the log lines
    just before it may die with groved, being written behind: not read)."""
    lines = read(f"{WRITE}/../groved.out").strip().splitlines()[-5:]
    return any(x.endswith(f"GROVE_DEPLOYMENT_CRASH_AT: killing groved at {point}") for x in lines)


def run(version, extra=""):
    """A run that marks its start (ready.<version>) and stays, as one process."""
    return (f"    Lifecycle:\n      Setenv: {{E2E_VERSION: '{version}'}}\n{extra}"
            f"      run: |\n        touch {{work:path}}/ready.{version}\n        exec sleep 600\n")


def recipes():
    for name in ("e2e.A", "e2e.B", "e2e.C", "e2e.K"):
        for version in (("1.0.0", "2.0.0") if name == "e2e.A" else ("1.0.0",)):
            support.component(gg, name, "Manifests:\n  - Platform: {os: linux}\n" + run(version),
                              version)
    support.component(gg, "e2e.S", """Manifests:
  - Platform: {os: linux}
    Lifecycle:
      Setenv: {E2E_VERSION: '1.0.0'}
      startup: |
        nohup sleep 700 >/dev/null 2>&1 &
        echo $! > {work:path}/svc.pid
""")
    support.component(gg, "e2e.Boot", "Manifests:\n  - Platform: {os: linux}\n" + run(
        "1.0.0", "      bootstrap: echo ran >> {work:path}/bootstraps\n"))
    # After grove.heartbeat (a dependency): the failed deployment configures it first.
    support.component(gg, "e2e.Fail", "ComponentDependencies:\n"
                      f"  {HB}: {{VersionRequirement: '>=1.0.0', DependencyType: SOFT}}\n"
                      "Manifests:\n  - Platform: {os: linux}\n" + run(
        "1.0.0", "      install: |\n        echo ran >> {work:path}/installs\n        exit 3\n"))
    support.component(gg, HB, "ComponentConfiguration:\n"
                      "  DefaultConfiguration: {interval_ms: 100, topic: e2e/beat}\n")
    support.component(gg, KV, "")
    # 2.0.0 carries its own build (the heartbeat built as 2.0.0) as a file:// artifact.
    support.component(gg, HB, "ComponentConfiguration:\n"
                      "  DefaultConfiguration: {interval_ms: 100, topic: e2e/beat}\n"
                      "Manifests:\n  - Platform: {os: linux}\n    Artifacts:\n"
                      f"      - Uri: file://{os.path.dirname(WRITE)}/local/libheartbeat.so\n", "2.0.0")
    arn = f"arn:aws:greengrass:{support.REGION}:{support.ACCOUNT}:components:{HB}:versions:2.0.0"
    check(f"{HB} 2.0.0 with its own build as a file:// artifact -> DEPLOYABLE",
          wait(lambda: gg.describe_component(arn=arn)["status"]["componentState"] == "DEPLOYABLE", 30))


if PHASE == "stopped":
    recipes()
    st, _ = deploy({"e2e.A": v("1.0.0"), "e2e.B": v("1.0.0"), "e2e.K": v("1.0.0")})
    check("the set before: {A 1, B 1, K 1} COMPLETED", st == "COMPLETED", st)
    expect_set("before", {"e2e.A": "1.0.0", "e2e.B": "1.0.0", "e2e.K": "1.0.0"},
               ["e2e.A", "e2e.B", "e2e.K"])
    create({"e2e.A": v("2.0.0"), "e2e.C": v("1.0.0"), "e2e.K": v("1.0.0")})
elif PHASE == "stopped_crashed":
    check("killed at `stopped`: A 2.0.0 and C never started",
          killed_at("stopped") and not os.path.exists(f"{WORKDIR}/e2e.A/ready.2.0.0")
          and not os.path.exists(f"{WORKDIR}/e2e.C/ready.1.0.0"))
elif PHASE == "stopped_after":
    ok, d = outcome(resumed_id(), "COMPLETED", "SUCCEEDED")
    check("the resumed deployment COMPLETED, SUCCEEDED", ok, d)
    expect_set("resumed", {"e2e.A": "2.0.0", "e2e.C": "1.0.0", "e2e.K": "1.0.0"},
               ["e2e.A", "e2e.C", "e2e.K"])
elif PHASE == "startup":
    create({"e2e.A": v("1.0.0"), "e2e.K": v("1.0.0"), "e2e.S": v("1.0.0")})
elif PHASE == "startup_crashed":
    svc = int(work("e2e.S", "svc.pid").strip() or 0)
    check("killed at `startup` of e2e.S: its startup ran, its service outlives groved",
          killed_at("startup of e2e.S") and alive(svc), svc)
    with open(f"{WRITE}/../crash.svc", "w") as f:
        f.write(str(svc))
elif PHASE == "startup_after":
    ok, d = outcome(resumed_id(), "COMPLETED", "SUCCEEDED")
    check("the resumed deployment COMPLETED, SUCCEEDED", ok, d)
    expect_set("resumed", {"e2e.A": "1.0.0", "e2e.K": "1.0.0", "e2e.S": "1.0.0"},
               ["e2e.A", "e2e.K", "e2e.S"])
    old = int(read(f"{WRITE}/../crash.svc").strip() or 0)
    svc = int(work("e2e.S", "svc.pid").strip() or 0)
    check("the killed groved's service of S is gone, the startup run again left the one running",
          old > 0 and not alive(old) and svc != old and alive(svc), (old, svc))
elif PHASE == "plugin":
    check("the profile's heartbeat at 100 ms", wait(lambda: beating() == "100 ms on e2e/beat", 10),
          beating())
    create({"e2e.A": v("2.0.0"), "e2e.K": v("1.0.0"), HB: v("1.0.0", interval_ms=300)})
elif PHASE == "plugin_crashed":
    check("killed at `configure` of grove.heartbeat (the kernel's answer)",
          killed_at("configure of grove.heartbeat"))
elif PHASE == "plugin_after":
    ok, d = outcome(resumed_id(), "COMPLETED", "SUCCEEDED")
    check("the resumed deployment COMPLETED, SUCCEEDED", ok, d)
    expect_set("resumed", {"e2e.A": "2.0.0", "e2e.K": "1.0.0", HB: "1.0.0"}, ["e2e.A", "e2e.K"])
    check("grovectl status: the kernel's heartbeat configured again, 300 ms on e2e/beat",
          wait(lambda: beating() == "300 ms on e2e/beat", 10), beating())
    hb = [p for p in status().get("plugins", []) if p["name"] == "heartbeat"]
    check("... heartbeat running, once", len(hb) == 1 and hb[0].get("state") == "running", hb)
elif PHASE == "load":
    create({"e2e.A": v("2.0.0"), "e2e.K": v("1.0.0"), HB: v("1.0.0"), KV: v("1.0.0")})
elif PHASE == "load_crashed":
    check("killed at `load` of grove.kv (the kernel's answer)", killed_at("load of grove.kv"))
elif PHASE == "load_after":
    ok, d = outcome(resumed_id(), "COMPLETED", "SUCCEEDED")
    check("the resumed deployment COMPLETED, SUCCEEDED", ok, d)
    expect_set("resumed", {"e2e.A": "2.0.0", "e2e.K": "1.0.0", HB: "1.0.0", KV: "1.0.0"},
               ["e2e.A", "e2e.K"])
    check("grovectl status: kv loaded again by the resumed run, running, once",
          [p.get("state") for p in status().get("plugins", []) if p["name"] == "kv"] == ["running"],
          status().get("plugins"))
    check("... the kernel's heartbeat still at 300 ms", beating() == "300 ms on e2e/beat", beating())
elif PHASE == "bootstrap":
    create({"e2e.A": v("1.0.0"), "e2e.Boot": v("1.0.0"), "e2e.K": v("1.0.0"), HB: v("1.0.0")})
elif PHASE == "bootstrap_crashed":
    check("killed at `bootstrap` of e2e.Boot: its bootstrap ran once, its run not started",
          killed_at("bootstrap of e2e.Boot") and work("e2e.Boot", "bootstraps") == "ran\n"
          and not os.path.exists(f"{WORKDIR}/e2e.Boot/ready.1.0.0"), work("e2e.Boot", "bootstraps"))
elif PHASE == "bootstrap_after":
    ok, d = outcome(resumed_id(), "COMPLETED", "SUCCEEDED")
    check("the resumed deployment COMPLETED, SUCCEEDED", ok, d)
    expect_set("resumed", {"e2e.A": "1.0.0", "e2e.Boot": "1.0.0", "e2e.K": "1.0.0", HB: "1.0.0"},
               ["e2e.A", "e2e.Boot", "e2e.K"])
    check("... kv (left out of the set) unloaded",
          not any(p["name"] == "kv" for p in status().get("plugins", [])), status().get("plugins"))
    check("... the bootstrap not journaled before the kill ran again (at least once: twice)",
          work("e2e.Boot", "bootstraps") == "ran\nran\n", work("e2e.Boot", "bootstraps"))
    check("... the kernel's heartbeat still at 300 ms", beating() == "300 ms on e2e/beat", beating())
elif PHASE == "rollback":
    check("the start did not run the journaled bootstrap again",
          work("e2e.Boot", "bootstraps") == "ran\nran\n", work("e2e.Boot", "bootstraps"))
    create({"e2e.A": v("2.0.0"), "e2e.C": v("1.0.0"), "e2e.Fail": v("1.0.0"),
            "e2e.K": v("1.0.0"), HB: v("1.0.0", interval_ms=500)})
elif PHASE == "rollback_crashed":
    check("killed at `rollback` of e2e.A (its 1.0.0 about to start again): e2e.Fail's "
          "install failed once, A 1.0.0 not started yet",
          killed_at("rollback of e2e.A") and work("e2e.Fail", "installs") == "ran\n"
          and not os.path.exists(f"{WORKDIR}/e2e.A/ready.1.0.0"), work("e2e.Fail", "installs"))
elif PHASE == "rollback_after":
    ok, d = outcome(resumed_id(), "FAILED", "FAILED", rollback=True)
    check("the resumed deployment FAILED with ROLLBACK_COMPLETE", ok, d)
    check("... its reason names e2e.Fail's install", "e2e.Fail 1.0.0: install" in (d[2] or ""), d)
    expect_set("rolled back", {"e2e.A": "1.0.0", "e2e.Boot": "1.0.0", "e2e.K": "1.0.0", HB: "1.0.0"},
               ["e2e.A", "e2e.Boot", "e2e.K"])
    check("... the resume ran the deployment again: e2e.Fail's install failed twice",
          work("e2e.Fail", "installs") == "ran\nran\n", work("e2e.Fail", "installs"))
    check("... the rollback did not run Boot's bootstrap again",
          work("e2e.Boot", "bootstraps") == "ran\nran\n", work("e2e.Boot", "bootstraps"))
    check("... the kernel's heartbeat back at 300 ms (the failed deployment's 500 undone)",
          beating() == "300 ms on e2e/beat", beating())
elif PHASE == "reload":
    create({"e2e.A": v("1.0.0"), "e2e.Boot": v("1.0.0"), "e2e.K": v("1.0.0"), HB: v("2.0.0")})
elif PHASE == "reload_crashed":
    check("killed at `reload` of grove.heartbeat (the kernel's answer)",
          killed_at("reload of grove.heartbeat"))
elif PHASE == "reload_after":
    ok, d = outcome(resumed_id(), "COMPLETED", "SUCCEEDED")
    check("the resumed deployment COMPLETED, SUCCEEDED", ok, d)
    expect_set("resumed", {"e2e.A": "1.0.0", "e2e.Boot": "1.0.0", "e2e.K": "1.0.0", HB: "2.0.0"},
               ["e2e.A", "e2e.Boot", "e2e.K"])
    hb = [p for p in status().get("plugins", []) if p["name"] == "heartbeat"]
    check("grovectl status: heartbeat reloaded again to 2.0.0's build (the kernel came back "
          "with the plugin directory's), running, once",
          len(hb) == 1 and hb[0].get("library") == ARTIFACT_LIB and hb[0].get("version") == "2.0.0"
          and hb[0].get("state") == "running", hb)
    check("... at 300 ms on e2e/beat", wait(lambda: beating() == "300 ms on e2e/beat", 10), beating())
else:
    sys.exit(f"unknown phase {PHASE}")
finish()
