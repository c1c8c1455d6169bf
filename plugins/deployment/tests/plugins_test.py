#!/usr/bin/python3
"""Grove's own plugins as components (`grove.<plugin>`), with boto3 (issue 15).

Usage: plugins_test.py before|after ENDPOINT CA_BUNDLE WRITE_DIR GROVECTL LOCAL_DIR
`before` creates the components and deploys grove.heartbeat (added, reconfigured, hot
reloaded to version 2.0.0, whose recipe carries its own build; 2.1.0, whose artifact is
the 1.0.0 build, refused and rolled back); plugins_test.sh then kills
groved with -9 and starts it again; `after` checks the plugin came back and goes on
(rollback after a plugin that fails to load, the deployment plugin refused as a component,
removal, a deployment replaced while the kernel loads a plugin for it). The kv plugin is the profile's and must never be touched. Prints PASS/FAIL lines;
exits 1 on any failure.
"""
import json
import os
import subprocess
import sys

from support import ACCOUNT, REGION, check, client, finish, thing_arn, wait

PHASE, ENDPOINT, CA, WRITE, GROVECTL, LOCAL = sys.argv[1:7]
THING = thing_arn("core-1")
ARTIFACT_LIB = (f"{WRITE}/plugins/deployment/components/packages/artifacts/"
                "grove.heartbeat/2.0.0/libheartbeat.so")
gg = client("greengrassv2", ENDPOINT, CA)


def status():
    out = subprocess.run([GROVECTL, "status", "--json"], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def plugin(name):
    for p in status().get("plugins", []):
        if p["name"] == name:
            return p
    return {}


def beating():
    return status().get("details", {}).get("heartbeat.beating", "")


def pong():
    out = subprocess.run([GROVECTL, "call", "e2e/beat/ping", ""], capture_output=True, text=True)
    words = out.stdout.split()
    return int(words[1]) if out.returncode == 0 and len(words) == 2 and words[1].isdigit() else -1


def installed():
    return {c["componentName"]: c for c in
            gg.list_installed_components(coreDeviceThingName="core-1")["installedComponents"]}


def deploy(components, **kw):
    did = gg.create_deployment(targetArn=THING, components=components, **kw)["deploymentId"]

    def done():
        d = gg.get_deployment(deploymentId=did)
        return d if d["deploymentStatus"] in ("COMPLETED", "FAILED", "CANCELED") else None
    d = wait(done, 30) or {}
    for e in gg.list_effective_deployments(coreDeviceThingName="core-1")["effectiveDeployments"]:
        if e["deploymentId"] == did:
            d["effective"] = e
    return d


def create_recipes(recipes, name, version, built):
    """Creates the recipes; waits for `name` `version`, whose artifact is a file:// build,
    to fetch it (DEPLOYABLE)."""
    for r in recipes:
        gg.create_component_version(inlineRecipe=("RecipeFormatVersion: '2020-01-25'\n" + r).encode())
    arn = f"arn:aws:greengrass:{REGION}:{ACCOUNT}:components:{name}:versions:{version}"
    check(f"{name} {version} with {built} as a file:// artifact -> DEPLOYABLE",
          wait(lambda: gg.describe_component(arn=arn)["status"]["componentState"] == "DEPLOYABLE", 30),
          gg.describe_component(arn=arn)["status"])


HEARTBEAT = "grove.heartbeat"
if PHASE == "before":
    defaults = "ComponentConfiguration:\n  DefaultConfiguration: {interval_ms: 100, topic: e2e/beat}\n"
    recipes = [
        f"ComponentName: {HEARTBEAT}\nComponentVersion: '1.0.0'\n{defaults}",
        f"ComponentName: {HEARTBEAT}\nComponentVersion: '2.0.0'\n{defaults}"
        f"Manifests:\n  - Platform: {{os: linux}}\n    Artifacts:\n"
        f"      - Uri: file://{LOCAL}/libheartbeat.so\n",
        # The 1.0.0 build under version 2.1.0: refused once loaded.
        f"ComponentName: {HEARTBEAT}\nComponentVersion: '2.1.0'\n{defaults}"
        f"Manifests:\n  - Platform: {{os: linux}}\n    Artifacts:\n"
        f"      - Uri: file://{LOCAL}/v1/libheartbeat.so\n",
        # No libghost.so anywhere: its load fails. It depends on heartbeat, which is
        # therefore changed first, before the failure.
        "ComponentName: grove.ghost\nComponentVersion: '1.0.0'\nComponentDependencies:\n"
        f"  {HEARTBEAT}: {{VersionRequirement: '>=1.0.0', DependencyType: HARD}}\n",
        "ComponentName: grove.deployment\nComponentVersion: '1.0.0'\n",
        "ComponentName: e2e.Placeholder\nComponentVersion: '1.0.0'\n",
    ]
    create_recipes(recipes, HEARTBEAT, "2.0.0", "its own build")
    create_recipes([], HEARTBEAT, "2.1.0", "the 1.0.0 build")
    kv_before = plugin("kv")

    # ---- added: a load with the merged configuration ----------------------------------
    d = deploy({HEARTBEAT: {"componentVersion": "1.0.0"}})
    check("a deployment of grove.heartbeat 1.0.0 -> COMPLETED, SUCCEEDED",
          d.get("deploymentStatus") == "COMPLETED"
          and d["effective"].get("coreDeviceExecutionStatus") == "SUCCEEDED", d)
    hb = plugin("heartbeat")
    check("grovectl status: heartbeat loaded and running, from the plugin directory",
          hb.get("state") == "running"
          and hb.get("library") == status().get("plugin_dir") + "/libheartbeat.so", hb)
    check("... with the recipe's DefaultConfiguration (100 ms on e2e/beat)",
          beating() == "100 ms on e2e/beat", beating())
    ic = installed().get(HEARTBEAT, {})
    check("ListInstalledComponents: grove.heartbeat 1.0.0 RUNNING, a root",
          (ic.get("componentVersion"), ic.get("lifecycleState"), ic.get("isRoot"))
          == ("1.0.0", "RUNNING", True), ic)
    first = wait(lambda: pong() > 0 and pong(), 30)
    check("the plugin answers on its topic (pong with its count)", first and first > 0, first)

    # ---- configuration changed: configure, live, state kept ----------------------------
    d = deploy({HEARTBEAT: {"componentVersion": "1.0.0",
                            "configurationUpdate": {"merge": '{"interval_ms": 300}'}}})
    check("a configurationUpdate merge {interval_ms: 300} -> COMPLETED",
          d.get("deploymentStatus") == "COMPLETED", d)
    check("... the plugin runs with it: 300 ms on e2e/beat",
          wait(lambda: beating() == "300 ms on e2e/beat", 10), beating())
    count = pong()
    check("... configured in place: its count went on (not a new plugin from 0)",
          count >= first, (first, count))

    # ---- a new version: a hot reload to the recipe's build, no beat lost ---------------
    sub = subprocess.Popen([GROVECTL, "sub", "e2e/beat"], stdout=subprocess.PIPE, text=True)
    beats = []

    def read_beats(n):
        while len(beats) < n:
            line = sub.stdout.readline()
            if not line:
                return
            beats.append(int(line.split()[1]))
    read_beats(2)
    d = deploy({HEARTBEAT: {"componentVersion": "2.0.0",
                            "configurationUpdate": {"merge": '{"interval_ms": 300}'}}})
    hb = plugin("heartbeat")
    check("grove.heartbeat 2.0.0 -> COMPLETED: hot-reloaded from the artifact's build",
          d.get("deploymentStatus") == "COMPLETED" and hb.get("library") == ARTIFACT_LIB
          and hb.get("last_reload", "") != "" and hb.get("state") == "running", (d, hb))
    read_beats(len(beats) + 3)
    sub.kill()
    sub.wait()
    check("... no beat lost or repeated across the reload (consecutive counts)",
          len(beats) >= 5 and beats == list(range(beats[0], beats[0] + len(beats))), beats)
    check("... the configuration kept (300 ms), ListInstalledComponents 2.0.0 RUNNING",
          beating() == "300 ms on e2e/beat"
          and installed().get(HEARTBEAT, {}).get("componentVersion") == "2.0.0"
          and installed()[HEARTBEAT]["lifecycleState"] == "RUNNING", (beating(), installed()))
    check("... the plugin says it is version 2.0.0 (its own build's PluginInfo.version)",
          hb.get("version") == "2.0.0", hb)

    # ---- a build of another version than its component's: refused, rolled back ---------
    d = deploy({HEARTBEAT: {"componentVersion": "2.1.0",
                            "configurationUpdate": {"merge": '{"interval_ms": 300}'}}},
               deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"})
    reason = d.get("effective", {}).get("reason", "")
    check("grove.heartbeat 2.1.0 whose artifact is the 1.0.0 build -> FAILED naming both "
          "versions, ROLLBACK_COMPLETE", d.get("deploymentStatus") == "FAILED"
          and "version 1.0.0, not the component's version 2.1.0" in reason
          and "ROLLBACK_COMPLETE" in reason, d)
    hb = plugin("heartbeat")
    check("... 2.0.0's build back (version 2.0.0, running), ListInstalledComponents 2.0.0 "
          "RUNNING", hb.get("library") == ARTIFACT_LIB and hb.get("version") == "2.0.0"
          and hb.get("state") == "running"
          and installed().get(HEARTBEAT, {}).get("componentVersion") == "2.0.0"
          and installed()[HEARTBEAT]["lifecycleState"] == "RUNNING", (hb, installed()))
    kv = plugin("kv")
    check("the profile's kv plugin, named by no deployment, left alone (same library, "
          "never reloaded)", kv.get("state") == "running" and kv.get("last_reload") == ""
          and kv.get("library") == kv_before.get("library"), kv)

else:
    # ---- after kill -9: the current deployment applied again, plugins included ---------
    hb = wait(lambda: (lambda p: p.get("state") == "running" and p)(plugin("heartbeat")), 30)
    check("after kill -9 and a restart the deployment plugin loads heartbeat again, from "
          "2.0.0's build at once (its artifact, no reload)",
          hb and hb.get("library") == ARTIFACT_LIB and hb.get("last_reload") == "", hb)
    check("... with the deployed configuration (300 ms on e2e/beat), RUNNING",
          wait(lambda: beating() == "300 ms on e2e/beat", 10)
          and wait(lambda: installed().get(HEARTBEAT, {}).get("lifecycleState") == "RUNNING", 10),
          (beating(), installed()))

    # ---- a plugin that fails to load: rolled back, configurations too -------------------
    d = deploy({HEARTBEAT: {"componentVersion": "2.0.0",
                            "configurationUpdate": {"merge": '{"interval_ms": 150}'}},
                "grove.ghost": {"componentVersion": "1.0.0"}},
               deploymentPolicies={"failureHandlingPolicy": "ROLLBACK"})
    reason = d.get("effective", {}).get("reason", "")
    check("a deployment adding grove.ghost (no libghost.so) -> FAILED naming it, "
          "ROLLBACK_COMPLETE", d.get("deploymentStatus") == "FAILED"
          and "grove.ghost" in reason and "load" in reason and "ROLLBACK_COMPLETE" in reason, d)
    check("... heartbeat's change in the same deployment was undone: 300 ms again",
          wait(lambda: beating() == "300 ms on e2e/beat", 10), beating())
    ic = installed()
    check("... grove.ghost not installed, grove.heartbeat 2.0.0 RUNNING, no ghost plugin",
          "grove.ghost" not in ic and ic.get(HEARTBEAT, {}).get("lifecycleState") == "RUNNING"
          and plugin("ghost") == {} and plugin("heartbeat").get("library") == ARTIFACT_LIB, ic)

    # ---- the deployment plugin itself is refused --------------------------------------
    d = deploy({"grove.deployment": {"componentVersion": "1.0.0"}})
    reason = d.get("effective", {}).get("reason", "")
    check("grove.deployment as a component -> FAILED with the reason, nothing changed",
          d.get("deploymentStatus") == "FAILED" and "deployment plugin itself" in reason
          and plugin("deployment").get("state") == "running"
          and plugin("heartbeat").get("state") == "running", d)

    # ---- unloaded by an operator: the component's state says so; the next deployment of
    # ---- the same set loads it again -----------------------------------------------------
    subprocess.run([GROVECTL, "unload", "heartbeat"], capture_output=True)
    state = wait(lambda: (lambda c: c.get("lifecycleState") == "ERRORED" and c)(
        installed().get(HEARTBEAT, {})), 10)
    check("grovectl unload heartbeat: ListInstalledComponents shows grove.heartbeat ERRORED "
          "with the reason", state and "no plugin 'heartbeat' loaded" in
          state.get("lifecycleStateDetails", ""), installed().get(HEARTBEAT))
    d = deploy({HEARTBEAT: {"componentVersion": "2.0.0",
                            "configurationUpdate": {"merge": '{"interval_ms": 300}'}}})
    hb = plugin("heartbeat")
    check("... the same set deployed again -> COMPLETED: loaded from 2.0.0's build (no "
          "reload), RUNNING", d.get("deploymentStatus") == "COMPLETED" and hb.get("state") == "running"
          and hb.get("library") == ARTIFACT_LIB and hb.get("last_reload") == ""
          and installed().get(HEARTBEAT, {}).get("lifecycleState") == "RUNNING", (d, hb))

    # ---- no artifact: the plugin directory's build (the package's, 1.0.0) under 1.5.0 runs,
    # ---- with a warning naming both versions (a package upgrade must not strand it) ------
    gg.create_component_version(inlineRecipe=(
        "RecipeFormatVersion: '2020-01-25'\n"
        f"ComponentName: {HEARTBEAT}\nComponentVersion: '1.5.0'\nComponentConfiguration:\n"
        "  DefaultConfiguration: {interval_ms: 100, topic: e2e/beat}\n").encode())
    arn = f"arn:aws:greengrass:{REGION}:{ACCOUNT}:components:{HEARTBEAT}:versions:1.5.0"
    wait(lambda: gg.describe_component(arn=arn)["status"]["componentState"] == "DEPLOYABLE", 30)
    # The same configuration as 2.0.0's: a reload only (the test counts reconfigurations).
    d = deploy({HEARTBEAT: {"componentVersion": "1.5.0",
                            "configurationUpdate": {"merge": '{"interval_ms": 300}'}}})
    hb = plugin("heartbeat")
    check("grove.heartbeat 1.5.0 without an artifact -> COMPLETED: the plugin directory's "
          "1.0.0 build running, ListInstalledComponents 1.5.0 RUNNING",
          d.get("deploymentStatus") == "COMPLETED" and hb.get("state") == "running"
          and hb.get("version") == "1.0.0"
          and hb.get("library") == status().get("plugin_dir") + "/libheartbeat.so"
          and installed().get(HEARTBEAT, {}).get("componentVersion") == "1.5.0"
          and installed()[HEARTBEAT]["lifecycleState"] == "RUNNING", (d, hb, installed()))
    with open(os.path.join(LOCAL, "..", "groved.out"), errors="replace") as f:
        logged = "plugin heartbeat from the plugin directory is version 1.0.0, not the " \
                 "component's version 1.5.0" in f.read()
    check("... groved warned naming both versions", logged)

    # ---- removed: unloaded --------------------------------------------------------------
    d = deploy({"e2e.Placeholder": {"componentVersion": "1.0.0"}})
    check("a deployment without grove.heartbeat -> COMPLETED, heartbeat unloaded",
          d.get("deploymentStatus") == "COMPLETED" and plugin("heartbeat") == {}, (d, status()))
    check("... ListInstalledComponents no longer has it", HEARTBEAT not in installed(), installed())
    check("... kv, the profile's, still running", plugin("kv").get("state") == "running")

    # ---- replaced while a change through the kernel is in flight ----------------------
    # P1 loads grove.echo (the kernel's test plugin, its build as a file:// artifact),
    # whose init blocks until a gate file exists, then starts e2e.Late (after it: a HARD
    # dependency). While the kernel is inside the load, P2 to the same target replaces P1:
    # the load is let end (the gate opens), then P1 stops at its next step (CANCELED,
    # interrupted) and P2 proceeds: echo unloaded again, e2e.Late gone. The gate opens
    # only once groved logged P1's interrupt: P2's preparation (on the blocking pool) may
    # take longer than this script's calls, and a P2 that begins after P1 completed
    # leaves P1 SUCCEEDED (replaced: "its run completed"), a correct outcome of another
    # order.
    gate = f"{LOCAL}/echo.gate"
    recipes = [
        "ComponentName: grove.echo\nComponentVersion: '1.0.0'\n"
        f"ComponentConfiguration:\n  DefaultConfiguration: {{init_gate: {gate}}}\n"
        f"Manifests:\n  - Platform: {{os: linux}}\n    Artifacts:\n"
        f"      - Uri: file://{LOCAL}/libecho.so\n",
        "ComponentName: e2e.Late\nComponentVersion: '1.0.0'\nComponentDependencies:\n"
        "  grove.echo: {VersionRequirement: '>=1.0.0', DependencyType: HARD}\n"
        f"Manifests:\n  - Platform: {{os: linux}}\n    Lifecycle:\n"
        f"      run: exec sleep 300\n",
    ]
    create_recipes(recipes, "grove.echo", "1.0.0", "its build")
    keep = {"e2e.Placeholder": {"componentVersion": "1.0.0"}}
    p1 = gg.create_deployment(targetArn=THING, components={
        **keep, "e2e.Late": {"componentVersion": "1.0.0"}})["deploymentId"]
    loading = wait(lambda: os.path.exists(gate + ".waiting"), 30)
    check("P1 (grove.echo, then e2e.Late): the kernel is inside echo's init", loading)
    p2 = gg.create_deployment(targetArn=THING, components=keep)["deploymentId"]

    def p1_state():
        for e in gg.list_effective_deployments(coreDeviceThingName="core-1")["effectiveDeployments"]:
            if e["deploymentId"] == p1:
                return e
        return {}
    check("P2 to the same target: P1 INACTIVE, still IN_PROGRESS while the load is in flight",
          gg.get_deployment(deploymentId=p1)["deploymentStatus"] == "INACTIVE"
          and p1_state().get("coreDeviceExecutionStatus") == "IN_PROGRESS", p1_state())
    log = os.path.join(LOCAL, "..", "groved.out")

    def interrupted():
        with open(log, errors="replace") as f:
            return f"interrupted at its next step: replaced by deployment {p2}" in f.read()
    check("... P2's apply began: groved logged P1's interrupt while the load is in flight",
          wait(interrupted, 30))
    with open(gate, "w"):
        pass
    e1 = wait(lambda: (lambda e: e if e.get("coreDeviceExecutionStatus") not in
                       ("IN_PROGRESS", "QUEUED") else None)(p1_state()), 30) or p1_state()
    check("the load ends: P1 CANCELED, interrupted",
          e1.get("coreDeviceExecutionStatus") == "CANCELED" and p2 in e1.get("reason", "")
          and "interrupted" in e1.get("reason", ""), e1)
    d = wait(lambda: (lambda d: d if d["deploymentStatus"] in ("COMPLETED", "FAILED") else None)(
        gg.get_deployment(deploymentId=p2)), 30) or {}
    check("... P2 -> COMPLETED: echo unloaded, e2e.Late not installed",
          d.get("deploymentStatus") == "COMPLETED"
          and wait(lambda: plugin("echo") == {}, 10) and "e2e.Late" not in installed(),
          (d, status(), installed()))
    check("... kv, the profile's, still running", plugin("kv").get("state") == "running")

finish()
