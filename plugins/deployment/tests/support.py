"""What the deployment plugin's boto3 tests share (api_test.py, deployments_test.py,
plugins_test.py, v1_api_test.py): PASS/FAIL checks and the exit status, the boto3
clients against groved's API, and polling. Each script imports it from its own folder
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
