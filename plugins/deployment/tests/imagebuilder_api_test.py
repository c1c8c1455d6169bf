#!/usr/bin/python3
"""Image Builder's component operations end to end, then grove-image using them.

Usage: imagebuilder_api_test.py GROVED GROVECTL GROVE_CERTS SOURCE_DIR BUILD_DIR

groved runs the deployment plugin over TLS (a group PKI from tools/grove-certs); Debian's
AWS CLI (`aws imagebuilder`) and boto3 (`boto3.client("imagebuilder")`) create components
from `data` and from a file:// `uri`, read, list (a filter, the paginator) and delete
them, and meet every error; groved is killed with -9 after a create and the component
is there after the restart. Then tools/grove-image builds an image whose profile names
the stored component's ARN, against that groved, and its build log shows the step's
output. Prints PASS/FAIL lines; exits 1 on any failure.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import boto3
import botocore.config
import botocore.exceptions

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "support"))
from free_port import free_port  # noqa: E402  (tests/support)

GROVED, GROVECTL, CERTS, SRC, BUILD = (os.path.abspath(a) for a in sys.argv[1:6])
AWS = "/usr/bin/aws"
ACCOUNT, REGION = "123456789012", "us-east-1"
KEY, SECRET = "AKIAGROVETEST00001", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
RO_KEY = "AKIAGROVEIBREADER1"
failed = 0

DOC = """name: StoredHello
description: a stored build component
schemaVersion: 1.0
phases:
  - name: build
    steps:
      - name: SayHello
        action: ExecuteBash
        inputs:
          commands:
            - echo "stored-component-step-ran in $(basename "$GROVE_IMAGE_ROOT")"
            - test -x bin/groved
  - name: test
    steps:
      - name: Check
        action: ExecuteBash
        onFailure: Abort
        timeoutSeconds: 60
        inputs:
          commands:
            - echo stored-component-test-ran
"""


def check(what, ok, detail=""):
    global failed
    print(("PASS: " if ok else "FAIL: ") + what + ("" if ok else f" -- {detail}"), flush=True)
    if not ok:
        failed += 1


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


work = tempfile.mkdtemp(prefix="grove-imagebuilder-test.")
env = dict(os.environ, GROVE_CONTROL_SOCKET=f"{work}/var/run/control.sock",
           GROVE_CA_DIR=f"{work}/ca", AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
           AWS_DEFAULT_REGION=REGION, AWS_CA_BUNDLE=f"{work}/pki/ca.crt",
           AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_PAGER="",
           AWS_MAX_ATTEMPTS="1")
os.environ.update({k: env[k] for k in ("AWS_CA_BUNDLE", "AWS_CONFIG_FILE",
                                       "AWS_SHARED_CREDENTIALS_FILE")})
port = free_port()
endpoint = f"https://127.0.0.1:{port}"
groved = None


def start_groved():
    global groved
    log = open(f"{work}/groved.out", "a")
    groved = subprocess.Popen([GROVED, "--config", f"{work}/profile.yaml", "--write-dir",
                               f"{work}/var"], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if groved.poll() is not None:
            break
        r = run([GROVECTL, "status"], env=env)
        if f"deployment.api: https://127.0.0.1:{port}" in r.stdout and "running" in r.stdout:
            return True
        time.sleep(0.1)
    with open(f"{work}/groved.out") as f:
        print(f.read()[-4000:])
    return False


def aws(*args, key=None):
    e = dict(env, AWS_ACCESS_KEY_ID=key or KEY)
    r = run([AWS, "imagebuilder", *args, "--endpoint-url", endpoint, "--output", "json"], env=e)
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None), r.stderr


def client(key=KEY):
    return boto3.client("imagebuilder", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=key, aws_secret_access_key=SECRET,
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def error_of(fn, **kw):
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], \
            e.response["Error"].get("Message", "")
    return None


try:
    r = run([CERTS, "init", f"{work}/pki", "--cn", "Group CA", "--days", "2"], env=env)
    r2 = run([CERTS, "server", f"{work}/pki", "--host", "localhost", "--ip", "127.0.0.1",
              "--days", "2"], env=env)
    if r.returncode or r2.returncode:
        print(r.stdout, r.stderr, r2.stdout, r2.stderr)
        sys.exit(1)
    os.makedirs(f"{work}/local")
    with open(f"{work}/profile.yaml", "w") as f:
        f.write(f"""kernel:
  log_level: info
plugins:
  - name: deployment
    config:
      api: {{port: {port}, cert_file: {work}/pki/server.crt, key_file: {work}/pki/server.key}}
      artifacts_file_dir: {work}/local
      credentials:
        - {{access_key_id: {KEY}, secret_access_key: {SECRET}}}
        - {{access_key_id: {RO_KEY}, secret_access_key: {SECRET},
            operations: [imagebuilder:GetComponent, imagebuilder:ListComponents]}}
""")
    check("groved serves the API over TLS", start_groved())
    with open(f"{work}/doc.yaml", "w") as f:
        f.write(DOC)

    # -- the AWS CLI ---------------------------------------------------------------
    rc, out, err = aws("create-component", "--name", "Stored Hello", "--semantic-version",
                       "1.0.0", "--platform", "Linux", "--data", f"file://{work}/doc.yaml")
    arn1 = (out or {}).get("componentBuildVersionArn", "")
    check("aws imagebuilder create-component --data -> build 1's ARN",
          arn1 == f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:component/stored-hello/1.0.0/1",
          f"{rc} {out} {err}")
    check("... with the clientToken the CLI made up and a requestId",
          bool((out or {}).get("clientToken")) and bool((out or {}).get("requestId")), str(out))

    # kill -9 right after the answer: the component was committed before it.
    groved.send_signal(signal.SIGKILL)
    groved.wait()
    check("groved restarts after kill -9", start_groved())
    rc, out, err = aws("get-component", "--component-build-version-arn", arn1)
    check("after kill -9, aws imagebuilder get-component -> the document as stored",
          rc == 0 and out["component"]["data"] == DOC and out["component"]["name"] == "Stored Hello",
          f"{rc} {err}")
    rc, out, err = aws("create-component", "--name", "Stored Hello", "--semantic-version",
                       "1.0.0", "--platform", "Linux", "--data", f"file://{work}/doc.yaml")
    check("the same name and version again -> build 2",
          (out or {}).get("componentBuildVersionArn", "").endswith("/stored-hello/1.0.0/2"),
          f"{rc} {out} {err}")
    rc, out, err = aws("create-component", "--name", "bad/name", "--semantic-version", "1.0.0",
                       "--platform", "Linux", "--data", f"file://{work}/doc.yaml")
    check("aws: a name off the pattern -> InvalidParameterValueException",
          rc != 0 and "InvalidParameterValueException" in err, err)
    rc, out, err = aws("list-components", "--filters", "name=name,values=Stored Hello")
    check("aws imagebuilder list-components --filters name -> 1.0.0 (its newest build)",
          rc == 0 and [v["arn"] for v in out["componentVersionList"]]
          == [f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:component/stored-hello/1.0.0"],
          f"{rc} {out} {err}")

    # -- boto3 ---------------------------------------------------------------------
    ib = client()
    base = {"platform": "Linux", "clientToken": "tok-1"}
    a = ib.create_component(name="boto-one", semanticVersion="2.1.0", data=DOC, **base)
    check("boto3 create_component -> build 1 with our clientToken",
          a["componentBuildVersionArn"].endswith("/boto-one/2.1.0/1") and a["clientToken"] == "tok-1",
          str(a))
    again = ib.create_component(name="boto-one", semanticVersion="2.1.0", data=DOC, **base)
    check("the same clientToken and request -> the first answer (same build, requestId)",
          again["componentBuildVersionArn"] == a["componentBuildVersionArn"]
          and again["requestId"] == a["requestId"], str(again))
    e = error_of(ib.create_component, name="boto-one", semanticVersion="2.2.0", data=DOC, **base)
    check("the same clientToken with other parameters -> IdempotentParameterMismatchException 400",
          e is not None and e[:2] == ("IdempotentParameterMismatchException", 400), str(e))
    b = ib.create_component(name="boto-one", semanticVersion="2.1.0", data=DOC, platform="Linux")
    check("boto3 (its own token): build 2", b["componentBuildVersionArn"].endswith("/2.1.0/2"), str(b))
    shutil.copy(f"{work}/doc.yaml", f"{work}/local/doc.yaml")
    u = ib.create_component(name="from-uri", semanticVersion="1.0.0", platform="Linux",
                            uri=f"file://{work}/local/doc.yaml")
    g = ib.get_component(componentBuildVersionArn=u["componentBuildVersionArn"])
    check("a file:// uri inside artifacts_file_dir -> stored, get_component returns its data",
          g["component"]["data"] == DOC and g["component"]["type"] == "BUILD", str(g)[:300])
    for i in range(3):
        ib.create_component(name=f"page-{i}", semanticVersion="1.0.0", platform="Windows", data=DOC)
    # Debian's botocore (1.29) and AWS CLI (2.9) ship no paginator for imagebuilder; a
    # newer botocore's follows nextToken exactly as this loop does.
    if ib.can_paginate("list_components"):
        how = "the list_components paginator"
        pages = list(ib.get_paginator("list_components").paginate(
            PaginationConfig={"PageSize": 2}))
    else:
        how = "list_components' nextToken (this botocore has no paginator for it)"
        pages = [ib.list_components(maxResults=2)]
        while "nextToken" in pages[-1] and len(pages) < 10:
            pages.append(ib.list_components(maxResults=2, nextToken=pages[-1]["nextToken"]))
    names = [v["name"] for p in pages for v in p["componentVersionList"]]
    check(f"{how}, 2 a page, walks every version once",
          len(pages) == 3 and sorted(names) == sorted(
              ["Stored Hello", "boto-one", "from-uri", "page-0", "page-1", "page-2"]),
          f"{len(pages)} pages: {names}")
    win = ib.list_components(filters=[{"name": "platform", "values": ["Windows"]}])
    check("list_components filtered by platform -> the three Windows ones",
          sorted(v["name"] for v in win["componentVersionList"]) == ["page-0", "page-1", "page-2"],
          str(win))

    errors = [
        ("a name off the pattern", dict(name="a/b", semanticVersion="1.0.0", data=DOC),
         "InvalidParameterValueException"),
        ("a version node over 2^30-1", dict(name="v-big", semanticVersion="1.1073741824.0", data=DOC),
         "InvalidVersionNumberException"),
        ("data and uri", dict(name="both", semanticVersion="1.0.0", data=DOC, uri="s3://b/k"),
         "InvalidParameterCombinationException"),
        ("neither data nor uri", dict(name="neither", semanticVersion="1.0.0"),
         "InvalidParameterCombinationException"),
        ("data over 16000 characters", dict(name="big", semanticVersion="1.0.0",
                                            data=DOC + "#" * 16000),
         "InvalidParameterValueException"),
        ("a file:// uri outside artifacts_file_dir",
         dict(name="outside", semanticVersion="1.0.0", uri="file:///etc/hostname"),
         "InvalidParameterValueException"),
    ]
    for what, kw, code in errors:
        e = error_of(ib.create_component, platform="Linux", **kw)
        check(f"boto3: {what} -> {code} 400", e is not None and e[:2] == (code, 400), str(e))
    bad = DOC.replace("timeoutSeconds: 60", "timeoutSeconds: forever")
    e = error_of(ib.create_component, name="bad-doc", semanticVersion="1.0.0", platform="Linux",
                 data=bad)
    check("a bad document -> InvalidParameterValueException naming the field and its line",
          e is not None and e[0] == "InvalidParameterValueException"
          and "test.Check.timeoutSeconds: line 18:" in e[2], str(e))
    unknown = f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:component/nothing/1.0.0/1"
    e = error_of(ib.get_component, componentBuildVersionArn=unknown)
    check("get_component of an unknown ARN -> ResourceNotFoundException 404",
          e is not None and e[:2] == ("ResourceNotFoundException", 404), str(e))
    ro = client(RO_KEY)
    check("a key allowed imagebuilder:GetComponent reads it",
          ro.get_component(componentBuildVersionArn=arn1)["component"]["version"] == "1.0.0")
    e = error_of(ro.delete_component, componentBuildVersionArn=arn1)
    check("... and may not delete -> ForbiddenException 403",
          e is not None and e[:2] == ("ForbiddenException", 403), str(e))
    d = ib.delete_component(componentBuildVersionArn=b["componentBuildVersionArn"])
    check("delete_component -> its ARN", d["componentBuildVersionArn"] == b["componentBuildVersionArn"])
    e = error_of(ib.get_component, componentBuildVersionArn=b["componentBuildVersionArn"])
    check("... then get_component -> ResourceNotFoundException",
          e is not None and e[0] == "ResourceNotFoundException", str(e))
    gg = boto3.client("greengrassv2", endpoint_url=endpoint, region_name=REGION,
                      aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    check("the Greengrass v2 API beside it still answers (signed for greengrass)",
          "components" in gg.list_components())

    # -- grove-image with the stored component ------------------------------------
    profile = f"{work}/image.yaml"
    with open(profile, "w") as f:
        f.write(f"plugins:\n  - name: heartbeat\nimage:\n  components:\n    - {arn1}\n")
    tool = [sys.executable, f"{SRC}/tools/grove-image", "build", profile, "--build-dir", BUILD,
            "--imagebuilder-endpoint", endpoint]
    r = run(tool + ["--out", f"{work}/tree"], env=env)
    log = ""
    if os.path.exists(f"{work}/tree/share/grove/build.log"):
        with open(f"{work}/tree/share/grove/build.log") as f:
            log = f.read()
    check("grove-image build with the component's ARN -> exit 0",
          r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:])
    check("... its build log shows the stored component's step output (build, then test)",
          f"component StoredHello ({arn1}): phase build, step SayHello" in log
          and "| stored-component-step-ran in tree" in log
          and "| stored-component-test-ran" in log, log[-2000:])
    r = run(tool[:-2] + ["--out", f"{work}/tree2"], env=dict(env, GROVE_IMAGEBUILDER_ENDPOINT=""))
    check("an ARN without an endpoint -> exit 2 saying so",
          r.returncode == 2 and "--imagebuilder-endpoint" in r.stderr, r.stderr)
    with open(f"{work}/image-missing.yaml", "w") as f:
        f.write(f"plugins:\n  - name: heartbeat\nimage:\n  components:\n    - {unknown}\n")
    r = run(tool[:2] + ["build", f"{work}/image-missing.yaml", "--build-dir", BUILD,
                        "--imagebuilder-endpoint", endpoint, "--out", f"{work}/tree3"], env=env)
    check("a component that is not stored -> exit 2 with ResourceNotFoundException, nothing written",
          r.returncode == 2 and "ResourceNotFoundException" in r.stderr
          and not os.path.exists(f"{work}/tree3"), r.stderr)
    r = run(tool[:-1] + [f"https://127.0.0.1:{free_port()}", "--out", f"{work}/tree4"], env=env)
    check("an endpoint nobody listens on -> exit 2, cannot reach",
          r.returncode == 2 and "cannot reach" in r.stderr, r.stderr)
finally:
    if groved and groved.poll() is None:
        groved.send_signal(signal.SIGKILL)
        groved.wait()
    shutil.rmtree(work, ignore_errors=True)

print(f"{'FAILED' if failed else 'OK'}: {failed} failure(s)")
sys.exit(1 if failed else 0)
