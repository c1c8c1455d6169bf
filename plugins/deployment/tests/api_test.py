#!/usr/bin/python3
"""boto3 (Debian's python3-boto3) against a running groved with the deployment plugin.

Usage: api_test.py ENDPOINT CA_BUNDLE WORKDIR
Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the full key, READONLY_KEY_ID
(a key allowed GetComponent only; same secret). Prints PASS/FAIL lines; exits 1 on any
failure.
"""
import datetime
import http.client
import json
import os
import ssl
import sys
import unittest.mock

import botocore.auth
import botocore.config
import botocore.exceptions

import support
from support import ACCOUNT, REGION, check

ENDPOINT, CA, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
def client(key=None, secret=None):
    return support.client("greengrassv2", ENDPOINT, CA, key, secret)


def error_of(fn, **kw):
    """(code, status, headers, body) of the ClientError fn(**kw) raises; None if none."""
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        meta = e.response["ResponseMetadata"]
        return e.response["Error"]["Code"], meta["HTTPStatusCode"], meta["HTTPHeaders"], e.response
    return None


def recipe(name, version, extra=""):
    return (f"RecipeFormatVersion: '2020-01-25'\nComponentName: {name}\n"
            f"ComponentVersion: '{version}'\n{extra}").encode()


def arn(name, version=None):
    a = f"arn:aws:greengrass:{REGION}:{ACCOUNT}:components:{name}"
    return a + (f":versions:{version}" if version else "")


gg = client()

# ---- success paths -------------------------------------------------------------------
r = gg.create_component_version(
    inlineRecipe=json.dumps({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": "py.Json",
        "ComponentVersion": "2.1.0", "ComponentPublisher": "boto3",
        "ComponentDependencies": {"py.Base": {"VersionRequirement": "^1.0.0",
                                              "DependencyType": "HARD"}},
        "Manifests": [{"Platform": {"os": "linux", "architecture": "amd64"},
                       "Lifecycle": {"run": "echo {configuration:/x}"}}]}).encode(),
    tags={"team": "edge"})
check("CreateComponentVersion with a JSON recipe and tags -> ARN, DEPLOYABLE",
      r["arn"] == arn("py.Json", "2.1.0") and r["status"]["componentState"] == "DEPLOYABLE"
      and r["ResponseMetadata"]["HTTPStatusCode"] == 201, r)
d = gg.describe_component(arn=arn("py.Json", "2.1.0"))
check("DescribeComponent: publisher, platform attributes, tags, a datetime",
      d["publisher"] == "boto3" and d["platforms"][0]["attributes"]["architecture"] == "amd64"
      and d["tags"] == {"team": "edge"} and isinstance(d["creationTimestamp"], datetime.datetime), d)
g = gg.get_component(arn=arn("py.Json", "2.1.0"), recipeOutputFormat="JSON")
doc = json.loads(g["recipe"])
check("GetComponent JSON: the recipe back, the dependency intact",
      g["recipeOutputFormat"] == "JSON"
      and doc["ComponentDependencies"]["py.Base"]["VersionRequirement"] == "^1.0.0", g)
import yaml  # python3-yaml (tools/deps)
y = yaml.safe_load(gg.get_component(arn=arn("py.Json", "2.1.0"), recipeOutputFormat="YAML")["recipe"])
check("GetComponent YAML: PyYAML reads the same document (strings stay strings)", y == doc, y)

for v in ["1.0.0", "1.2.0", "1.10.0", "0.1.0", "2.0.0-beta.1"]:
    gg.create_component_version(inlineRecipe=recipe("py.Many", v))
pages = list(gg.get_paginator("list_component_versions").paginate(
    arn=arn("py.Many"), PaginationConfig={"PageSize": 2}))
versions = [x["componentVersion"] for p in pages for x in p["componentVersions"]]
check("ListComponentVersions pages of 2 via nextToken, newest first",
      len(pages) == 3 and versions == ["2.0.0-beta.1", "1.10.0", "1.2.0", "1.0.0", "0.1.0"],
      (len(pages), versions))
names = [c["componentName"] for p in gg.get_paginator("list_components").paginate(
    PaginationConfig={"PageSize": 1}) for c in p["components"]]
check("ListComponents pages of 1 list every component once", sorted(names) == names
      and {"py.Json", "py.Many"} <= set(names) and len(set(names)) == len(names), names)

# ---- idempotency ---------------------------------------------------------------------
a = gg.create_component_version(inlineRecipe=recipe("py.Idem", "1.0.0"), clientToken="tok-1")
b = gg.create_component_version(inlineRecipe=recipe("py.Idem", "1.0.0"), clientToken="tok-1")
check("same clientToken, same body -> the first answer again",
      a["arn"] == b["arn"] and a["creationTimestamp"] == b["creationTimestamp"], (a, b))
e = error_of(gg.create_component_version, inlineRecipe=recipe("py.Idem", "1.0.1"), clientToken="tok-1")
check("same clientToken, another body -> ConflictException 409",
      e is not None and e[0] == "ConflictException" and e[1] == 409, e)
e = error_of(gg.create_component_version, inlineRecipe=recipe("py.Idem", "1.0.0"))
check("an existing version -> ConflictException 409 with resourceId",
      e is not None and e[0] == "ConflictException" and e[1] == 409
      and e[3].get("resourceId") == arn("py.Idem", "1.0.0"), e)

# ---- bad input -----------------------------------------------------------------------
e = error_of(gg.create_component_version,
             inlineRecipe=recipe("py.Bad", "1.0", "Manifests:\n  - Artifacts:\n      - Uri: s3://b/..\n"))
fields = {f["name"] for f in e[3].get("fields", [])} if e else set()
check("malformed recipe -> ValidationException 400 naming each field",
      e is not None and e[0] == "ValidationException" and e[1] == 400
      and {"inlineRecipe/ComponentVersion", "inlineRecipe/Manifests/0/Artifacts/0/Uri"} <= fields, e)
e = error_of(gg.create_component_version, inlineRecipe=b"\x00\x01not a recipe")
check("not YAML/JSON -> ValidationException", e is not None and e[0] == "ValidationException", e)
e = error_of(gg.describe_component, arn=arn("py.Nope", "1.0.0"))
check("unknown version -> ResourceNotFoundException 404",
      e is not None and e[0] == "ResourceNotFoundException" and e[1] == 404, e)
check("... x-amzn-errortype header carries the type",
      e is not None and e[2].get("x-amzn-errortype", "").startswith("ResourceNotFoundException"), e)

# ---- authentication and authorization ------------------------------------------------
e = error_of(client(secret="not-the-secret-at-all").list_components)
check("bad signature -> InvalidSignatureException 403",
      e is not None and e[0] == "InvalidSignatureException" and e[1] == 403, e)
e = error_of(client(key="AKIAUNKNOWN0000000").list_components)
check("unknown key -> UnrecognizedClientException 403",
      e is not None and e[0] == "UnrecognizedClientException" and e[1] == 403, e)


REAL_DATETIME = datetime.datetime


class Skewed(datetime.datetime):
    """The signer's clock, six minutes behind (botocore and its CRT signer both read
    datetime.datetime.utcnow)."""

    @classmethod
    def utcnow(cls):
        return REAL_DATETIME.utcnow() - datetime.timedelta(minutes=6)


with unittest.mock.patch.object(botocore.auth.datetime, "datetime", Skewed):
    e = error_of(client().list_components)
check("clock 6 min behind -> InvalidSignatureException 'Signature expired'",
      e is not None and e[0] == "InvalidSignatureException" and e[1] == 403
      and "Signature expired" in e[3]["Error"]["Message"], e)
ro = client(key=os.environ["READONLY_KEY_ID"])
e = error_of(ro.create_component_version, inlineRecipe=recipe("py.Ro", "1.0.0"))
check("a key without CreateComponentVersion -> AccessDeniedException 403",
      e is not None and e[0] == "AccessDeniedException" and e[1] == 403, e)
check("... which may GetComponent", ro.get_component(arn=arn("py.Json", "2.1.0"))["recipe"] != b"")

ctx = ssl.create_default_context(cafile=CA)
host, port = ENDPOINT.split("//")[1].split(":")
conn = http.client.HTTPSConnection(host, int(port), context=ctx)
conn.request("GET", "/greengrass/v2/components")
resp = conn.getresponse()
body = json.loads(resp.read())
check("unsigned request -> 403 MissingAuthenticationTokenException in AWS's shape",
      resp.status == 403 and resp.getheader("x-amzn-ErrorType") == "MissingAuthenticationTokenException"
      and "message" in body, (resp.status, resp.getheaders(), body))

# ---- resolution -----------------------------------------------------------------------
res = gg.resolve_component_candidates(
    platform={"name": "linux", "attributes": {"os": "linux"}},
    componentCandidates=[{"componentName": "py.Many", "componentVersion": "1.0.0",
                          "versionRequirements": {"py.App": "^1.0.0", "py.Other": "<1.10.0"}}])
rv = res["resolvedComponentVersions"]
check("ResolveComponentCandidates: the newest version meeting every requirement",
      len(rv) == 1 and rv[0]["componentVersion"] == "1.2.0" and b"py.Many" in rv[0]["recipe"], rv)
e = error_of(gg.resolve_component_candidates, platform={"attributes": {"os": "linux"}},
             componentCandidates=[{"componentName": "py.Many",
                                   "versionRequirements": {"py.App": ">=2.0.0", "py.Other": "<1.0.0"}}])
check("... conflicting requirements -> ConflictException naming both requirers",
      e is not None and e[0] == "ConflictException" and "py.App requires '>=2.0.0'" in e[3]["Error"]["Message"]
      and "py.Other requires '<1.0.0'" in e[3]["Error"]["Message"], e)

# ---- whole-graph resolution -------------------------------------------------------------
# app 2.0.0 needs lib ^2, which log rules out (lib <2): app falls back to 1.0.0 and lib is
# the newest 1.x; the answer lists the candidates, then the dependencies they brought.
for name, version, deps in [
        ("py.G.app", "2.0.0", {"py.G.lib": ("^2.0.0", "HARD")}),
        ("py.G.app", "1.0.0", {"py.G.lib": ("^1.0.0", "HARD")}),
        ("py.G.log", "1.0.0", {"py.G.lib": ("<2.0.0", "SOFT")}),
        ("py.G.lib", "1.0.0", {}), ("py.G.lib", "1.5.0", {}), ("py.G.lib", "2.0.0", {}),
        ("py.G.orphan", "1.0.0", {"py.G.ghost": ("*", "HARD")}),
        ("py.G.cyc1", "1.0.0", {"py.G.cyc2": ("*", "HARD")}),
        ("py.G.cyc2", "1.0.0", {"py.G.cyc1": ("^1", "SOFT")})]:
    gg.create_component_version(inlineRecipe=json.dumps({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
        "ComponentDependencies": {d: {"VersionRequirement": r, "DependencyType": t}
                                  for d, (r, t) in deps.items()}}).encode())
res = gg.resolve_component_candidates(
    platform={"name": "linux", "attributes": {"os": "linux"}},
    componentCandidates=[{"componentName": "py.G.app", "componentVersion": "2.0.0"},
                         {"componentName": "py.G.log", "componentVersion": "1.0.0"}])
got = [(c["componentName"], c["componentVersion"]) for c in res["resolvedComponentVersions"]]
check("ResolveComponentCandidates walks ComponentDependencies and backtracks app 2.0.0",
      got == [("py.G.app", "1.0.0"), ("py.G.log", "1.0.0"), ("py.G.lib", "1.5.0")], got)
e = error_of(gg.resolve_component_candidates, platform={"attributes": {"os": "linux"}},
             componentCandidates=[{"componentName": "py.G.log"},
                                  {"componentName": "py.G.lib", "versionRequirements": {"ops": ">=2.0.0"}}])
msg = e[3]["Error"]["Message"] if e else ""
check("... a requirement clashing with a dependency's -> ConflictException naming both and who asked",
      e is not None and e[0] == "ConflictException" and "ops requires '>=2.0.0'" in msg
      and "py.G.log@1.0.0 requires '<2.0.0'" in msg, e)
e = error_of(gg.resolve_component_candidates, platform={"attributes": {"os": "linux"}},
             componentCandidates=[{"componentName": "py.G.orphan"}])
check("... a dependency not stored -> ResourceNotFoundException naming it",
      e is not None and e[0] == "ResourceNotFoundException" and "py.G.ghost" in e[3]["Error"]["Message"], e)
e = error_of(gg.resolve_component_candidates, platform={"attributes": {"os": "linux"}},
             componentCandidates=[{"componentName": "py.G.cyc1"}])
check("... a dependency cycle -> ConflictException with the cycle",
      e is not None and e[0] == "ConflictException"
      and "py.G.cyc1@1.0.0 -> py.G.cyc2@1.0.0 -> py.G.cyc1@1.0.0" in e[3]["Error"]["Message"], e)

# ---- lambdaFunction ---------------------------------------------------------------------
# A function package as lambda_packages_dir lays it out: the Lambda configuration and the
# deployment package (a real zip).
import hashlib  # noqa: E402
import zipfile  # noqa: E402

pkg = os.path.join(WORK, "lambda_packages", "thermo", "7")
os.makedirs(pkg)
with open(os.path.join(pkg, "configuration.json"), "w") as f:
    json.dump({"FunctionName": "thermo", "Runtime": "python3.9", "Handler": "thermo.handler",
               "Description": "Reads the thermometer"}, f)
with zipfile.ZipFile(os.path.join(pkg, "code.zip"), "w") as z:
    z.writestr("thermo.py", "def handler(event, context):\n    return event\n")
with open(os.path.join(pkg, "code.zip"), "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
LARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:thermo:7"
params = {
    "eventSources": [{"topic": "sensors/temp", "type": "PUB_SUB"}, {"topic": "cmd/#", "type": "IOT_CORE"}],
    "maxQueueSize": 10, "maxInstancesCount": 2, "maxIdleTimeInSeconds": 30, "timeoutInSeconds": 5,
    "statusTimeoutInSeconds": 20, "pinned": False, "inputPayloadEncodingType": "binary",
    "execArgs": ["-O"], "environmentVariables": {"UNIT": "celsius"},
    "linuxProcessParams": {"isolationMode": "GreengrassContainer", "containerParams": {
        "memorySizeInKB": 65536, "mountROSysfs": True,
        "volumes": [{"sourcePath": "/srv/t", "destinationPath": "/t", "permission": "ro", "addGroupOwner": False}],
        "devices": [{"path": "/dev/i2c-1", "permission": "rw", "addGroupOwner": True}]}}}
r = gg.create_component_version(lambdaFunction={
    "lambdaArn": LARN,
    "componentPlatforms": [{"name": "Linux x86", "attributes": {"os": "linux", "architecture": "amd64"}}],
    "componentDependencies": {"py.G.lib": {"versionRequirement": "^1.0.0", "dependencyType": "SOFT"}},
    "componentLambdaParameters": params})
check("CreateComponentVersion(lambdaFunction) -> thermo 7.0.0 (name and N.0.0 from the ARN)",
      r["componentName"] == "thermo" and r["componentVersion"] == "7.0.0"
      and r["status"]["componentState"] == "DEPLOYABLE", r)
doc = json.loads(gg.get_component(arn=arn("thermo", "7.0.0"), recipeOutputFormat="JSON")["recipe"])
want = dict(params, runtime="python3", handler="thermo.handler",
            codeUri=os.path.join(pkg, "code.zip"), codeSha256=digest)
check("GetComponent: the converted recipe runs it under function_runtime with every parameter",
      doc["ComponentType"] == "aws.greengrass.lambda" and doc["ComponentSource"] == LARN
      and doc["ComponentDescription"] == "Reads the thermometer"
      and doc["Manifests"] == [{"Platform": {"os": "linux", "architecture": "amd64"}}]
      and doc["ComponentDependencies"] == {"py.G.lib": {"VersionRequirement": "^1.0.0", "DependencyType": "SOFT"}}
      and doc["ComponentConfiguration"]["DefaultConfiguration"] == want, doc)
d = gg.describe_component(arn=arn("thermo", "7.0.0"))
check("DescribeComponent: the platform's given name",
      [p["name"] for p in d["platforms"]] == ["Linux x86"], d["platforms"])
res = gg.resolve_component_candidates(
    platform={"attributes": {"os": "linux", "architecture": "amd64"}},
    componentCandidates=[{"componentName": "thermo"}])
check("... and it resolves with its dependency like any component",
      [(c["componentName"], c["componentVersion"]) for c in res["resolvedComponentVersions"]]
      == [("thermo", "7.0.0"), ("py.G.lib", "1.5.0")], res["resolvedComponentVersions"])
for what, larn, says in [
        ("$LATEST", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:thermo:$LATEST", "$LATEST"),
        ("a version with no package", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:thermo:8",
         "no function package thermo version 8"),
        ("an alias", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:thermo:prod", "not a version number")]:
    e = error_of(gg.create_component_version, lambdaFunction={"lambdaArn": larn})
    fields = e[3].get("fields", []) if e else []
    check(f"lambdaFunction naming {what} -> ValidationException on lambdaFunction/lambdaArn",
          e is not None and e[0] == "ValidationException" and e[1] == 400
          and [f["name"] for f in fields] == ["lambdaFunction/lambdaArn"] and says in fields[0]["message"], e)
e = error_of(gg.create_component_version, lambdaFunction={
    "lambdaArn": LARN, "componentVersion": "7.1.0", "componentLambdaParameters": {"maxQueueSize": -1}})
check("... a parameter out of function_runtime's range -> ValidationException naming it",
      e is not None and e[0] == "ValidationException"
      and [f["name"] for f in e[3].get("fields", [])] == ["lambdaFunction/componentLambdaParameters/maxQueueSize"], e)

# ---- tags and the rate limit ---------------------------------------------------------
gg.tag_resource(resourceArn=arn("py.Json", "2.1.0"), tags={"site": "berlin"})
gg.untag_resource(resourceArn=arn("py.Json", "2.1.0"), tagKeys=["team"])
t = gg.list_tags_for_resource(resourceArn=arn("py.Json", "2.1.0"))["tags"]
check("TagResource, UntagResource, ListTagsForResource", t == {"site": "berlin"}, t)
slow = client(key=os.environ["SLOW_KEY_ID"])
codes = []
for _ in range(20):  # 20 calls at 1 request/s: at most 1 + (their duration) pass
    e = error_of(slow.list_components)
    codes.append(e[0] if e else "ok")
    if e:
        retry = e[2].get("retry-after")
        break
check("a key limited to 1 request/s -> ThrottlingException 429 with Retry-After",
      codes[0] == "ok" and codes[-1] == "ThrottlingException" and retry == "1", codes)

# ---- raw signed requests: bodies the SDKs never send ----------------------------------
import botocore.awsrequest  # noqa: E402
import botocore.credentials  # noqa: E402

signer = botocore.auth.SigV4Auth(botocore.credentials.Credentials(
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]), "greengrass", REGION)


def signed(method, path, body):
    req = botocore.awsrequest.AWSRequest(method=method, url=ENDPOINT + path, data=body,
                                         headers={"Content-Type": "application/json"})
    signer.add_auth(req)
    c = http.client.HTTPSConnection(host, int(port), context=ctx)
    c.request(method, path, body=body, headers=dict(req.headers.items()))
    r = c.getresponse()
    return r.status, r.getheader("x-amzn-ErrorType"), r.read()


st, et, _ = signed("POST", "/greengrass/v2/createComponentVersion", b"{not json")
check("a signed body that is not JSON -> 400 SerializationException", st == 400 and et == "SerializationException", (st, et))
st, et, _ = signed("POST", "/greengrass/v2/createComponentVersion",
                   json.dumps({"inlineRecipe": "x" * 70000}).encode())
check("a body over api.max_body_bytes (65536) -> 413", st == 413, (st, et))
st, et, _ = signed("GET", "/greengrass/v2/coreDevices/core-1/nothing", b"")
check("a route of no operation -> 404 UnknownOperationException", st == 404 and et == "UnknownOperationException", (st, et))

# ---- artifacts: fetched, checked, stored, served pre-signed ---------------------------
import base64  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402
import io  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
import zipfile  # noqa: E402

ART_URL, SRV, LOCAL, ARTS = (os.environ[k] for k in ("ARTIFACT_URL", "SRV", "LOCAL", "ARTIFACTS"))
os.makedirs(f"{SRV}/https", exist_ok=True)


def b64sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def with_artifacts(name, artifacts):
    return gg.create_component_version(inlineRecipe=json.dumps({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
        "Manifests": [{"Lifecycle": {"run": "true"}, "Artifacts": artifacts}]}).encode())


def settled(name, timeout=20):
    deadline = time.time() + timeout
    while True:
        d = gg.describe_component(arn=arn(name, "1.0.0"))
        if d["status"]["componentState"] in ("DEPLOYABLE", "FAILED") or time.time() > deadline:
            return d
        time.sleep(0.1)


def fetch(url):
    """(status, body) of a plain GET, as a device without AWS credentials does it."""
    try:
        with urllib.request.urlopen(url, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


payload = os.urandom(3000) + b"grove"
with open(f"{SRV}/https/tool.bin", "wb") as f:
    f.write(payload)
uri_https = f"{ART_URL}/https/tool.bin"
r = with_artifacts("py.Art", [{"Uri": uri_https, "Digest": b64sha(payload), "Algorithm": "SHA-256",
                               "Permission": {"Read": "ALL", "Execute": "OWNER"}}])
check("CreateComponentVersion with an https artifact -> REQUESTED", r["status"]["componentState"] == "REQUESTED", r)
d = settled("py.Art")
check("... fetched and its SHA-256 digest checked -> DEPLOYABLE, no errors",
      d["status"]["componentState"] == "DEPLOYABLE" and d["status"]["errors"] == {}, d["status"])
sha = hashlib.sha256(payload).hexdigest()
stored = f"{ARTS}/sha256/{sha}"
check("... stored content-addressed (sha256/<hex>), read-only",
      os.path.isfile(stored) and open(stored, "rb").read() == payload
      and (os.stat(stored).st_mode & 0o777) == 0o444, stored)
url = gg.get_component_version_artifact(arn=arn("py.Art", "1.0.0"), artifactName="tool.bin")["preSignedUrl"]
check("GetComponentVersionArtifact -> a pre-signed URL on the API's own server",
      url.startswith(ENDPOINT + "/grove/artifacts/" + sha + "/tool.bin?X-Grove-Expires="), url)
st, body = fetch(url)
check("the pre-signed URL fetched with urllib (no SigV4) -> the artifact's bytes", st == 200 and body == payload, st)
url2 = gg.get_component_version_artifact(arn=arn("py.Art", "1.0.0"),
                                         artifactName=uri_https.split(":", 1)[1].lstrip("/"))["preSignedUrl"]
check("GetComponentVersionArtifact by the Uri after its scheme (AWS's artifact name) -> the same artifact",
      fetch(url2) == (200, payload), url2)
forged = url[:-1] + ("0" if url[-1] != "0" else "1")
st, body = fetch(forged)
check("a forged pre-signed URL (signature changed) -> 403", st == 403 and b"signature" in body, (st, body))
st, body = fetch(url.replace(f"/{sha}/", f"/{hashlib.sha256(b'x').hexdigest()}/"))
check("a pre-signed URL pointed at another artifact -> 403", st == 403, (st, body))
key = open(f"{ARTS}/url.key", "rb").read()


def signed_url(expires):
    path = f"/grove/artifacts/{sha}/tool.bin"
    sig = hmac.new(key, f"GET\n{path}\n{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{ENDPOINT}{path}?X-Grove-Expires={expires}&X-Grove-Signature={sig}"


st_ok, _ = fetch(signed_url(int(time.time()) + 60))
st, body = fetch(signed_url(int(time.time()) - 10))
check("an expired pre-signed URL (signed with the core's key) -> 403 Request has expired; "
      "the same signed for the future -> 200", st == 403 and b"expired" in body and st_ok == 200, (st, body, st_ok))
e = error_of(gg.get_component_version_artifact, arn=arn("py.Art", "1.0.0"), artifactName="nope.bin")
check("GetComponentVersionArtifact of a name the recipe lacks -> ResourceNotFoundException",
      e is not None and e[0] == "ResourceNotFoundException", e)
# Percent-encoded: botocore removes literal dot segments before it signs a path.
st, et, _ = signed("GET", "/greengrass/v2/components/" + arn("py.Art", "1.0.0")
                   + "/artifacts/a/%2E%2E/tool.bin", b"")
check("GetComponentVersionArtifact with '..' (%2E%2E) in artifactName -> 400 ValidationException",
      st == 400 and et == "ValidationException", (st, et))

local = b"from a local file\n"
with open(f"{LOCAL}/conf.txt", "wb") as f:
    f.write(local)
with_artifacts("py.File", [{"Uri": f"file://{LOCAL}/conf.txt"}])
d = settled("py.File")
url = gg.get_component_version_artifact(arn=arn("py.File", "1.0.0"), artifactName="conf.txt")["preSignedUrl"]
check("a file:// artifact under artifacts_file_dir -> DEPLOYABLE, served by its URL",
      d["status"]["componentState"] == "DEPLOYABLE" and fetch(url) == (200, local), d["status"])
with_artifacts("py.FileOut", [{"Uri": "file:///etc/hostname"}])
d = settled("py.FileOut")
check("a file:// artifact outside artifacts_file_dir -> FAILED, errors naming the Uri",
      d["status"]["componentState"] == "FAILED"
      and "not under artifacts_file_dir" in d["status"]["errors"].get("file:///etc/hostname", ""), d["status"])
e = error_of(gg.get_component_version_artifact, arn=arn("py.FileOut", "1.0.0"), artifactName="hostname")
check("... and GetComponentVersionArtifact of it -> ResourceNotFoundException saying why",
      e is not None and e[0] == "ResourceNotFoundException" and "FAILED" in e[3]["Error"]["Message"], e)

with_artifacts("py.BadDigest", [{"Uri": uri_https, "Digest": b64sha(b"other bytes"), "Algorithm": "SHA-256"}])
d = settled("py.BadDigest")
check("a wrong digest -> FAILED, status.errors[Uri] says digest mismatch, status.message too",
      d["status"]["componentState"] == "FAILED"
      and "digest mismatch" in d["status"]["errors"].get(uri_https, "")
      and "digest mismatch" in d["status"].get("message", ""), d["status"])
e = error_of(gg.resolve_component_candidates, platform={"attributes": {"os": "linux"}},
             componentCandidates=[{"componentName": "py.BadDigest", "componentVersion": "1.0.0",
                                   "versionRequirements": {"me": "*"}}])
check("... and ResolveComponentCandidates never returns the FAILED version", e is not None and e[1] in (404, 409), e)
with_artifacts("py.Missing", [{"Uri": f"{ART_URL}/https/none.bin"}])
d = settled("py.Missing")
check("an https artifact the server does not have -> FAILED with the HTTP status",
      d["status"]["componentState"] == "FAILED"
      and "404" in d["status"]["errors"].get(f"{ART_URL}/https/none.bin", ""), d["status"])
with_artifacts("py.NoBase", [{"Uri": "s3://no-such-bucket/x.bin"}, {"Uri": uri_https}])
d = settled("py.NoBase")
check("one artifact of two missing -> FAILED, errors name only that one",
      d["status"]["componentState"] == "FAILED" and list(d["status"]["errors"]) == ["s3://no-such-bucket/x.bin"],
      d["status"])


def make_zip(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries:
            z.writestr(name, data)
    return buf.getvalue()


good = make_zip([("bin/run.sh", b"#!/bin/sh\necho hi\n"), ("README", b"readme")])
with open(f"{SRV}/https/good.zip", "wb") as f:
    f.write(good)
with_artifacts("py.Zip", [{"Uri": f"{ART_URL}/https/good.zip", "Unarchive": "ZIP",
                           "Digest": b64sha(good), "Algorithm": "SHA-256"}])
d = settled("py.Zip")
unpacked = f"{ARTS}/unarchived/{hashlib.sha256(good).hexdigest()}/bin/run.sh"
check("a ZIP artifact (Unarchive: ZIP) -> DEPLOYABLE, its entries unpacked under unarchived/<hex>/",
      d["status"]["componentState"] == "DEPLOYABLE" and os.path.isfile(unpacked)
      and open(unpacked, "rb").read() == b"#!/bin/sh\necho hi\n", d["status"])
slip = make_zip([("ok.txt", b"fine"), ("../../../../grove-zip-slip.txt", b"evil")])
with open(f"{SRV}/https/slip.zip", "wb") as f:
    f.write(slip)
with_artifacts("py.Slip", [{"Uri": f"{ART_URL}/https/slip.zip", "Unarchive": "ZIP"}])
d = settled("py.Slip")
check("a ZIP with a zip-slip entry (../../..) -> FAILED, refused whole, nothing written outside",
      d["status"]["componentState"] == "FAILED"
      and "zip-slip" in d["status"]["errors"].get(f"{ART_URL}/https/slip.zip", "")
      and not os.path.exists(f"{ARTS}/unarchived/{hashlib.sha256(slip).hexdigest()}")
      and not any(os.path.exists(os.path.join(p, "grove-zip-slip.txt"))
                  for p in (ARTS, f"{ARTS}/unarchived", f"{ARTS}/tmp", os.path.dirname(ARTS), "/tmp")),
      d["status"])

# ---- connectivity info (no /v2 in the route) ------------------------------------------
r = gg.update_connectivity_info(thingName="core-1", connectivityInfo=[
    {"id": "lan", "hostAddress": "10.0.0.5", "portNumber": 8883, "metadata": "site A"}])
r2 = gg.update_connectivity_info(thingName="core-1", connectivityInfo=[
    {"id": "lan", "hostAddress": "10.0.0.6", "portNumber": 8883},
    {"id": "wan", "hostAddress": "core-1.example.com", "portNumber": 443, "metadata": "alpn"}])
check("UpdateConnectivityInfo twice -> version 1 then 2", (r["version"], r2["version"]) == ("1", "2"), (r, r2))
g = gg.get_connectivity_info(thingName="core-1")
check("GetConnectivityInfo -> the last list, as sent",
      [(c["id"], c["hostAddress"], c["portNumber"], c["metadata"]) for c in g["connectivityInfo"]]
      == [("lan", "10.0.0.6", 8883, ""), ("wan", "core-1.example.com", 443, "alpn")], g)
g = gg.get_connectivity_info(thingName="never-set")
check("GetConnectivityInfo of a thing never set -> an empty list", g["connectivityInfo"] == [], g)
st, et, body = signed("PUT", "/greengrass/things/core-1/connectivityInfo",
                      json.dumps({"ConnectivityInfo": [{"HostAddress": "h", "PortNumber": 70000},
                                                       {"PortNumber": 1}]}).encode())
names = [f["name"] for f in json.loads(body).get("fields", [])] if body else []
check("UpdateConnectivityInfo with port 70000 and no HostAddress -> 400 ValidationException naming both",
      st == 400 and et == "ValidationException"
      and names == ["ConnectivityInfo/0/PortNumber", "ConnectivityInfo/1/HostAddress"], (st, et, body))
check("... and nothing changed (still version 2's list)",
      len(gg.get_connectivity_info(thingName="core-1")["connectivityInfo"]) == 2)
st, et, _ = signed("PUT", "/greengrass/things/bad%20name/connectivityInfo",
                   json.dumps({"ConnectivityInfo": []}).encode())
check("a thing name with a space -> 400 ValidationException", st == 400 and et == "ValidationException", (st, et))

# ---- delete --------------------------------------------------------------------------
gg.delete_component(arn=arn("py.Many", "1.0.0"))
e = error_of(gg.get_component, arn=arn("py.Many", "1.0.0"))
check("DeleteComponent -> the version is gone (404)", e is not None and e[1] == 404, e)
e = error_of(gg.delete_component, arn=arn("py.Many", "1.0.0"))
check("DeleteComponent again -> ResourceNotFoundException", e is not None and e[0] == "ResourceNotFoundException", e)

support.finish()
