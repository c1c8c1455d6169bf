#!/usr/bin/python3
"""Latency and throughput of the deployment plugin's Greengrass v2 API, one client at a
time, against a do-nothing HTTPS peer in the same run. Prints one JSON object on stdout.
Not a test: it reports figures and never fails on them (issue 14, "Benchmarks").

(a) grove:  a real groved with the deployment plugin over TLS (a grove-certs PKI); each
            CreateComponentVersion is committed to SQLite (synchronous=FULL) before its
            answer; each request's SigV4 signature is checked.
(b) peer:   Python's ThreadingHTTPServer over TLS with the same certificate, answering
            every request with a canned DescribeComponent body (no signature check, no
            store): the floor of one signed HTTPS round trip with the same client.

Clients: boto3 (Debian's, as users call it) and a raw one (http.client on one kept-alive
TLS connection, signing with botocore's SigV4Auth): the difference is the SDK's own cost.
Reported per operation and client: ops/s, p50/p99 ms, and grove/peer ratios of p50; plus
the store's bytes per version after the run.

Usage: /usr/bin/python3 deployment_api_bench.py [--build DIR] [--ops 300]
"""

import argparse
import base64
import http.client
import http.server
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import start_deployment_api, stop  # noqa: E402
from device_bench import free_port  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY, SECRET, REGION = "AKIAGROVEBENCH0001", "bench-secret-bench-secret", "us-east-1"
ARN = "arn:aws:greengrass:us-east-1:123456789012:components:bench.C:versions:"


def recipe(i):
    return ("RecipeFormatVersion: '2020-01-25'\nComponentName: bench.C\n"
            "ComponentVersion: '1.0.%d'\nComponentPublisher: bench\n"
            "Manifests:\n  - Platform: {os: linux}\n    Lifecycle: {run: 'echo %d'}\n" % (i, i))


def stats(samples):
    samples = sorted(samples)
    total = sum(samples)
    return {"ops_per_s": round(len(samples) / total, 1),
            "p50_ms": round(1000 * statistics.median(samples), 3),
            "p99_ms": round(1000 * samples[min(len(samples) - 1, int(0.99 * len(samples)))], 3)}


class raw_client:
    """One kept-alive TLS connection; requests signed with botocore's SigV4Auth."""

    def __init__(self, port, ca):
        self.port = port
        self.conn = http.client.HTTPSConnection(
            "127.0.0.1", port, context=ssl.create_default_context(cafile=ca))
        self.auth = botocore.auth.SigV4Auth(
            botocore.credentials.Credentials(KEY, SECRET), "greengrass", REGION)

    def call(self, method, path, body=b""):
        url = "https://127.0.0.1:%d%s" % (self.port, path)
        req = botocore.awsrequest.AWSRequest(method=method, url=url, data=body,
                                             headers={"Content-Type": "application/json"})
        self.auth.add_auth(req)
        self.conn.request(method, path, body=body, headers=dict(req.headers.items()))
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise RuntimeError("%s %s -> %d %s" % (method, path, resp.status, data[:200]))
        return data


def run_clients(port, ca, ops, first):
    """(boto3 create, boto3 describe, raw create, raw describe) samples; versions
    first .. first + 2*ops - 1 are created."""
    gg = boto3.client("greengrassv2", endpoint_url="https://127.0.0.1:%d" % port, verify=ca,
                      region_name=REGION, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                      config=botocore.config.Config(retries={"max_attempts": 1}))
    raw = raw_client(port, ca)
    out = {k: [] for k in ("boto3_create", "boto3_describe", "raw_create", "raw_describe")}
    for i in range(ops):
        v = first + 2 * i
        t = time.perf_counter()
        gg.create_component_version(inlineRecipe=recipe(v).encode())
        out["boto3_create"].append(time.perf_counter() - t)
        t = time.perf_counter()
        gg.describe_component(arn=ARN + "1.0.%d" % v)
        out["boto3_describe"].append(time.perf_counter() - t)
        body = json.dumps({"inlineRecipe": base64.b64encode(recipe(v + 1).encode()).decode()})
        t = time.perf_counter()
        raw.call("POST", "/greengrass/v2/createComponentVersion", body.encode())
        out["raw_create"].append(time.perf_counter() - t)
        t = time.perf_counter()
        raw.call("GET", "/greengrass/v2/components/%s/metadata"
                 % (ARN + "1.0.%d" % (v + 1)).replace(":", "%3A"))
        out["raw_describe"].append(time.perf_counter() - t)
    return out


class canned(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as groved's server (TCP_NODELAY)
    body = json.dumps({"arn": ARN + "1.0.0", "componentName": "bench.C",
                       "componentVersion": "1.0.0", "creationTimestamp": 1.0,
                       "status": {"componentState": "DEPLOYABLE"}}).encode()

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--ops", type=int, default=300)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="grove-deployment-bench-")
    proc = None
    try:
        proc, port, ca, write_dir = start_deployment_api(args.build, work, KEY, SECRET)
        pki = os.path.join(work, "pki")
        crt, key = os.path.join(pki, "server.crt"), os.path.join(pki, "server.key")

        peer_port = free_port()
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", peer_port), canned)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()

        run_clients(port, ca, 20, 100000)  # warm-up (TLS session, caches)
        grove = run_clients(port, ca, args.ops, 0)
        peer = run_clients(peer_port, ca, args.ops, 0)
        srv.shutdown()
        result = {"bench": "deployment_api", "ops": args.ops, "grove": {}, "peer": {},
                  "ratio_p50_grove_over_peer": {}}
        for k in grove:
            result["grove"][k] = stats(grove[k])
            result["peer"][k] = stats(peer[k])
            result["ratio_p50_grove_over_peer"][k] = round(
                result["grove"][k]["p50_ms"] / result["peer"][k]["p50_ms"], 2)
        # The store's size once groved closed it (WAL checkpointed into the file).
        stop(proc)
        proc = None
        db = os.path.join(write_dir, "plugins", "deployment", "components.db")
        versions = 2 * args.ops + 2 * 20  # the measured runs and the warm-up
        size = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
        result["store_versions"] = versions
        result["store_bytes_per_version"] = round(size / versions, 1)
        print(json.dumps(result, indent=2))
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
