"""Model components (issue 17), driven by model_components_test.sh: boto3's greengrassv2
client against groved, which runs ml_inference (a group with its own model, conv_relu) and
the deployment plugin. A component whose DefaultConfiguration has
localMachineLearningModelResourceData and whose artifact is a model package is served by
ml_inference under the component's name (grovectl ml models / ml infer, compared with
numpy); a new version (the same network as a .zip) swaps in while grovectl ml infer runs
in a loop, none failing; a component with a wrong Digest is FAILED and a deployment naming
it fails; an unloadable model (Hardmax) fails the deployment with OpenCV's reason and is
rolled back, the other models serving; a Greengrass v1 deployment (boto3's greengrass
client) replaces the group's own model but keeps the component's; a deployment without the
component unloads it.

Usage: model_components_test.py ENDPOINT CA WORK GROVECTL ML_TESTS_DIR"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import threading

import yaml

from support import check, client, finish, installed, settle, thing_arn, wait

ENDPOINT, CA, WORK, GROVECTL, ML_TESTS = sys.argv[1:6]
sys.path.insert(0, ML_TESTS)
from ml_test_support import worst  # noqa: E402  (ml_inference's tests folder, added above)

gg = client("greengrassv2", ENDPOINT, CA)
THING = thing_arn("core-1")
MODELS = os.path.join(WORK, "local", "models")
index = json.load(open(os.path.join(MODELS, "index.json")))
cnn = [c for c in index["cases"] if c["id"] == "cnn"][0]
NAME = "e2e.Cnn"


def ctl(*args):
    return subprocess.run([GROVECTL, "--socket", os.path.join(WORK, "var", "run", "control.sock"),
                           *args], capture_output=True, text=True, timeout=60)


def models():
    r = ctl("--json", "ml", "models")
    return {m["id"]: m for m in json.loads(r.stdout)} if r.returncode == 0 else {}


def digest(path, wrong=False):
    data = open(path, "rb").read() + (b"x" if wrong else b"")
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def model_component(version, path, config="{}", wrong_digest=False, name=NAME):
    """Creates model component `name` `version` whose artifact is `path`; its arn."""
    recipe = (f"RecipeFormatVersion: '2020-01-25'\nComponentName: {name}\n"
              f"ComponentVersion: '{version}'\nComponentConfiguration:\n  DefaultConfiguration:\n"
              f"    localMachineLearningModelResourceData: {config}\n"
              f"Manifests:\n  - Platform: {{os: linux}}\n    Artifacts:\n"
              f"      - {{Uri: 'file://{path}', Digest: '{digest(path, wrong_digest)}', "
              f"Algorithm: SHA-256}}\n")
    return gg.create_component_version(inlineRecipe=recipe.encode())["arn"]


def state(arn):
    return gg.describe_component(arn=arn)["status"]


def deploy(components):
    did = gg.create_deployment(targetArn=THING, components=components)["deploymentId"]
    d = settle(gg, did)
    for e in gg.list_effective_deployments(coreDeviceThingName="core-1")["effectiveDeployments"]:
        if e["deploymentId"] == did:
            d["effective"] = e
    return d


def infer_cnn():
    """grovectl ml infer on the component's model with the case's tensors: (ok, version,
    largest difference to numpy)."""
    f = os.path.join(WORK, "cnn.json")
    if not os.path.exists(f):
        json.dump({"inputs": cnn["inputs"]}, open(f, "w"))
    r = ctl("ml", "infer", NAME, "--input", f)
    if r.returncode != 0:
        return False, r.stderr.strip(), float("inf")
    out = json.loads(r.stdout)
    return True, out["version"], worst(out["outputs"], cnn["outputs"])


wait(lambda: models().get("conv_relu", {}).get("state") == "serving", 60)
check("the group's own model serves", models().get("conv_relu", {}).get("state") == "serving",
      models())

# 1.0.0: the CNN package (.tar.gz with manifest.yaml) as the component's artifact.
v1 = model_component("1.0.0", os.path.join(MODELS, "cnn.tar.gz"))
check("1.0.0 is DEPLOYABLE (its artifact fetched and its digest checked)",
      wait(lambda: state(v1)["componentState"] == "DEPLOYABLE", 30), state(v1))
d = deploy({NAME: {"componentVersion": "1.0.0"}})
check("the deployment of 1.0.0 COMPLETED", d.get("deploymentStatus") == "COMPLETED", d)
check("the component is RUNNING", installed(gg).get(NAME, {}).get("lifecycleState") == "RUNNING",
      installed(gg).get(NAME))
m = models().get(NAME, {})
check("grovectl ml models lists it serving version 1.0.0",
      m.get("state") == "serving" and m.get("version") == "1.0.0", m)
ok, version, diff = infer_cnn()
check("grovectl ml infer runs it, numpy's outputs within 1e-4",
      ok and version == "1.0.0" and diff <= 1e-4, (ok, version, diff))
r = ctl("ml", "infer", NAME, "--input", cnn["image"], "--top-k", "2")
check("the PNG through the package's preprocessing, top-2 labels",
      r.returncode == 0 and len(json.loads(r.stdout).get("top", [])) == 2, r.stderr)

# 2.0.0: the same network as a .zip, deployed while clients infer in a loop.
v2 = model_component("2.0.0", cnn["zip"]["path"])
wait(lambda: state(v2)["componentState"] == "DEPLOYABLE", 30)
results, stop = [], threading.Event()


def load():
    while not stop.is_set():
        results.append(infer_cnn())


clients = [threading.Thread(target=load) for _ in range(2)]
for t in clients:
    t.start()
# The clients are answered by 1.0.0 before the deployment begins (a loaded machine may
# take longer to start them than the deployment takes).
wait(lambda: len([r for r in results if r[1] == "1.0.0"]) >= 2, 30)
d = deploy({NAME: {"componentVersion": "2.0.0"}})
wait(lambda: len([r for r in results if r[1] == "2.0.0"]) >= 3, 30)
stop.set()
for t in clients:
    t.join()
check("the deployment of 2.0.0 COMPLETED", d.get("deploymentStatus") == "COMPLETED", d)
bad = [r for r in results if not r[0] or r[2] > 1e-4]
seen = sorted({r[1] for r in results if r[0]})
check("the swap under load: %d requests, none failed, versions %s" % (len(results), seen),
      not bad and seen == ["1.0.0", "2.0.0"], bad[:3])
check("grovectl ml models shows 2.0.0", models().get(NAME, {}).get("version") == "2.0.0",
      models().get(NAME))

# A wrong digest: the version is FAILED with the reason, and a deployment naming it fails.
v3 = model_component("3.0.0", cnn["zip"]["path"], wrong_digest=True)
st = wait(lambda: state(v3)["componentState"] == "FAILED", 30) and state(v3)
check("a wrong Digest: the version is FAILED naming the digest",
      bool(st) and "digest" in json.dumps(st.get("errors", {})).lower(), state(v3))
d = deploy({NAME: {"componentVersion": "3.0.0"}})
check("a deployment of the FAILED version fails", d.get("deploymentStatus") == "FAILED", d)
m = models()
check("2.0.0 and the group's model still serve",
      m.get(NAME, {}).get("version") == "2.0.0" and m.get("conv_relu", {}).get("state") == "serving",
      m)

# An unloadable model (an operator OpenCV lacks) beside it: the deployment fails with the
# backend's reason and is rolled back; every other model serves on.
bad_model = index["bad"]["unsupported"]["path"]
hx = model_component("1.0.0", bad_model, "{manifest: {inputs: [{name: x, shape: [1, 4]}]}}",
                     name="e2e.Hardmax")
wait(lambda: state(hx)["componentState"] == "DEPLOYABLE", 30)
d = deploy({NAME: {"componentVersion": "2.0.0"}, "e2e.Hardmax": {"componentVersion": "1.0.0"}})
reason = d.get("effective", {}).get("reason", "")
check("an unloadable model fails the deployment with OpenCV's reason",
      d.get("deploymentStatus") == "FAILED" and "could not load the model" in reason
      and 'of type "Hardmax"' in reason, d)
check("the failed deployment was rolled back", "ROLLBACK_COMPLETE" in reason, reason)
m = wait(lambda: "e2e.Hardmax" not in models() and models())
check("after the rollback the unloadable model is gone, 2.0.0 and conv_relu serve",
      "e2e.Hardmax" not in m and m.get(NAME, {}).get("version") == "2.0.0"
      and m.get("conv_relu", {}).get("state") == "serving", m)
ok, version, diff = infer_cnn()
check("the component's model still answers", ok and version == "2.0.0", (ok, version))

# A configuration naming a file outside the component's artifacts is refused by name.
esc = model_component("1.0.0", cnn["zip"]["path"],
                      "{path: ../../../../../local/models/conv_relu.onnx}", name="e2e.Escape")
wait(lambda: state(esc)["componentState"] == "DEPLOYABLE", 30)
d = deploy({NAME: {"componentVersion": "2.0.0"}, "e2e.Escape": {"componentVersion": "1.0.0"}})
reason = d.get("effective", {}).get("reason", "")
check("a path out of the component's artifacts fails the deployment naming the key",
      d.get("deploymentStatus") == "FAILED"
      and "localMachineLearningModelResourceData.path" in reason, d)
check("and 2.0.0 serves on", models().get(NAME, {}).get("version") == "2.0.0", models())

# A Greengrass v1 deployment replaces the group: the group's own model goes, the model
# component's resource stays (as Lambda components' functions do) and serves on.
ggv1 = client("greengrass", ENDPOINT, CA)


def v1_deploy():
    """Deploys a v1 group of core-1 alone: its status and error message."""
    cert = "arn:aws:iot:us-east-1:123456789012:cert/0123abcd"
    core = ggv1.create_core_definition(Name="core", InitialVersion={"Cores": [
        {"Id": "c", "ThingArn": thing_arn("core-1"), "CertificateArn": cert}]})
    group = ggv1.create_group(Name="models-v1", InitialVersion={
        "CoreDefinitionVersionArn": core["LatestVersionArn"]})
    dep = ggv1.create_deployment(GroupId=group["Id"], GroupVersionId=group["LatestVersion"],
                                 DeploymentType="NewDeployment")

    def settled():
        st = ggv1.get_deployment_status(GroupId=group["Id"], DeploymentId=dep["DeploymentId"])
        return st if st["DeploymentStatus"] in ("Success", "Failure") else None
    st = wait(settled, 60) or {}
    return st.get("DeploymentStatus"), st.get("ErrorMessage", "")


status, error = v1_deploy()
check("a v1 deployment without resources: Success", status == "Success", (status, error))
m = wait(lambda: "conv_relu" not in models() and models())
check("... the group's own model conv_relu is gone, the component's 2.0.0 serves on",
      "conv_relu" not in (m or {}) and (m or {}).get(NAME, {}).get("version") == "2.0.0", m)
group_file = os.path.join(WORK, "group.yaml")
g = yaml.safe_load(open(group_file))
check("... the group file keeps the component's resource only",
      [r["id"] for r in g.get("resources") or []] == [NAME], g.get("resources"))
ok, version, diff = infer_cnn()
check("... and the component's model answers", ok and version == "2.0.0", (ok, version))
check("... ListInstalledComponents: the component still RUNNING",
      installed(gg).get(NAME, {}).get("lifecycleState") == "RUNNING", installed(gg).get(NAME))
# (A v1 resource cannot take this component's id: v1 ids have no `.`; the refusal of one
# that could is deployment_v1_test's.)
# The group's own model back (an operator's edit of the file) for what follows.
conv = [c for c in index["cases"] if c["id"] == "conv_relu"][0]
g["resources"].append({"id": "conv_relu", "config": {"localMachineLearningModelResourceData": {
    "path": os.path.join(MODELS, "conv_relu.onnx"), "sha256": conv["sha256"],
    "manifest": {"inputs": [{"name": "x", "shape": [1, 3, 8, 8]}]}}}})
with open(group_file + ".tmp", "w") as f:
    yaml.safe_dump(g, f)
os.rename(group_file + ".tmp", group_file)
check("the group's own model back by an edit of the file: serving",
      wait(lambda: models().get("conv_relu", {}).get("state") == "serving", 60), models())

# A deployment without it: its model is unloaded, the group's own serves on.
other = (f"RecipeFormatVersion: '2020-01-25'\nComponentName: e2e.Other\nComponentVersion: '1.0.0'\n"
         f"Manifests:\n  - Platform: {{os: linux}}\n    Lifecycle: {{run: 'sleep 600'}}\n")
gg.create_component_version(inlineRecipe=other.encode())
d = deploy({"e2e.Other": {"componentVersion": "1.0.0"}})
check("a deployment without the model component COMPLETED", d.get("deploymentStatus") == "COMPLETED", d)
m = wait(lambda: NAME not in models() and models())
check("its model is unloaded; the group's own serves", NAME not in (m or {})
      and (m or {}).get("conv_relu", {}).get("state") == "serving", m)
check("ListInstalledComponents no longer has it", NAME not in installed(gg), installed(gg))
finish()
