"""What the deployment plugin's boto3 tests share (api_test.py, deployments_test.py,
plugins_test.py, runtime_test.py, v1_api_test.py): PASS/FAIL checks and the exit status,
the boto3 clients against groved's API, polling, and the core's installed components and
their processes. Each script imports it from its own folder
(Python puts a script's folder first on sys.path).
"""
import os
import sys
import time

import boto3
import botocore.config

ACCOUNT, REGION = "123456789012", "us-east-1"
failed = 0


def check(what, ok, detail=""):
    """Prints PASS or FAIL (with `detail`) for `what`; a FAIL makes finish() exit 1."""
    global failed
    print(("PASS: " if ok else "FAIL: ") + what + ("" if ok else f" -- {detail}"))
    if not ok:
        failed += 1


def finish():
    """Exits 1 if any check failed, else 0."""
    sys.exit(1 if failed else 0)


def client(service, endpoint, ca, key=None, secret=None):
    """A boto3 client of `service` ("greengrassv2", "greengrass") against groved at
    `endpoint`, trusting `ca`; the key and secret default to the environment's. No
    retries: each refusal is seen as the server sent it."""
    return boto3.client(
        service, endpoint_url=endpoint, verify=ca, region_name=REGION,
        aws_access_key_id=key or os.environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=secret or os.environ.get("AWS_SECRET_ACCESS_KEY"),
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}))


def thing_arn(name):
    """The ARN of IoT thing `name`."""
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:thing/{name}"


def wait(fn, timeout=20):
    """fn()'s first true result within `timeout` seconds (polled every 0.1 s), else its
    last result."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    return last


def settle(gg, did, timeout=60):
    """GetDeployment of `did` once it is COMPLETED, FAILED or CANCELED ({} if not in time)."""
    def done():
        d = gg.get_deployment(deploymentId=did)
        return d if d["deploymentStatus"] in ("COMPLETED", "FAILED", "CANCELED") else None
    return wait(done, timeout) or {}


def component(gg, name, body, version="1.0.0"):
    """Creates component `name` `version` from a YAML recipe whose rest is `body`."""
    recipe = (f"RecipeFormatVersion: '2020-01-25'\nComponentName: {name}\n"
              f"ComponentVersion: '{version}'\n{body}")
    gg.create_component_version(inlineRecipe=recipe.encode())


def installed(gg, core="core-1"):
    """The components installed on thing `core`, by name (greengrassv2 client `gg`)."""
    return {c["componentName"]: c for c in
            gg.list_installed_components(coreDeviceThingName=core)["installedComponents"]}


def effective(gg, did, core="core-1"):
    """Deployment `did`'s effective deployment on thing `core`, or {}."""
    for e in gg.list_effective_deployments(coreDeviceThingName=core)["effectiveDeployments"]:
        if e["deploymentId"] == did:
            return e
    return {}


def read(path):
    """The text of `path`, or "" if it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def pid_in(workdir, name):
    """The pid component `name`'s run wrote to its work directory under `workdir`, or 0."""
    text = read(f"{workdir}/{name}/pid").strip()
    return int(text) if text.isdigit() else 0


def alive(pid):
    """Whether `pid` is a live (not zombie) process."""
    return pid > 0 and os.path.exists(f"/proc/{pid}") and "Z" not in read(f"/proc/{pid}/stat").split()[2:3]
