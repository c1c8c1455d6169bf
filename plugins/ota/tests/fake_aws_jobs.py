#!/usr/bin/python3
"""A fake AWS IoT Jobs service for the ota plugin's test (the MQTT API of the AWS IoT
Developer Guide, "Jobs device MQTT API"), on the Mosquitto a test runs as "the cloud".

It holds one thing's job executions, in order, each {jobId, document}; the next one is
the first not terminal (SUCCEEDED, FAILED, REJECTED):

  $aws/things/T/jobs/$next/get       -> $next/get/accepted {"execution": next, ...}
                                        ({} without "execution" when none is pending)
  $aws/things/T/jobs/<id>/get        -> <id>/get/accepted {"execution": that one, ...}
                                        | <id>/get/rejected {"code": "ResourceNotFound"}
  $aws/things/T/jobs/<id>/update     -> <id>/update/accepted {"executionState": ...
                                        only with includeJobExecutionState: true}
                                        | <id>/update/rejected {"code": "InvalidRequest"...}
                                        | <id>/update/rejected {"code": "VersionMismatch",
                                          "executionState": {status, statusDetails,
                                          versionNumber}} when expectedVersion is given
                                          and is not the execution's versionNumber
                                        and, once terminal, notify-next with the next one
  at start                           -> notify-next with the first

Versions as AWS keeps them: an execution starts at versionNumber 1 and each accepted
update adds one. A job with "bumps": N in --jobs has its version raised N times by
"another client" just before the device's first update of it is checked (so an
expectedVersion read before then is stale: VersionMismatch).

Every accepted update is appended to --log as a JSON line {jobId, status, statusDetails,
expectedVersion}; every rejection to --rejected-log as {jobId, code, expectedVersion}.

Usage: fake_aws_jobs.py --port P --cafile CA --cert C --key K --thing T --jobs FILE
                        --log FILE --rejected-log FILE --ready-file FILE
"""

import argparse
import json
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt

STATUSES = {"IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"}
TERMINAL = {"SUCCEEDED", "FAILED", "REJECTED"}


class Jobs:
    def __init__(self, args):
        self.args = args
        self.base = f"$aws/things/{args.thing}/jobs/"
        with open(args.jobs) as f:
            jobs = json.load(f)
        self.execs = [{"jobId": j["jobId"], "status": "QUEUED", "versionNumber": 1,
                       "executionNumber": 1, "jobDocument": j["document"],
                       "statusDetails": {}} for j in jobs]
        self.bumps = {j["jobId"]: j.get("bumps", 0) for j in jobs}
        self.lock = threading.Lock()

    def next(self):
        for e in self.execs:
            if e["status"] not in TERMINAL:
                return e
        return None

    def publish_next(self, topic, token=None):
        e = self.next()
        msg = {"timestamp": int(time.time())}
        if e:
            msg["execution"] = dict(e, thingName=self.args.thing)
        if token:
            msg["clientToken"] = token
        self.client.publish(topic, json.dumps(msg), qos=1)

    def on_connect(self, client, _u, _f, rc):
        client.subscribe(self.base + "+/get", qos=1)
        client.subscribe(self.base + "+/update", qos=1)
        with self.lock:
            self.publish_next(self.base + "notify-next")
        with open(self.args.ready_file, "w") as f:
            f.write("ready\n")

    def on_message(self, client, _u, m):
        try:
            body = json.loads(m.payload or b"{}")
        except ValueError:
            body = None
        rest = m.topic[len(self.base):]
        with self.lock:
            token = body.get("clientToken") if isinstance(body, dict) else None
            if rest == "$next/get":
                self.publish_next(self.base + "$next/get/accepted", token)
                return
            if rest.endswith("/get"):
                job = rest[:-len("/get")]
                e = next((x for x in self.execs if x["jobId"] == job), None)
                if e is None:
                    client.publish(self.base + rest + "/rejected", json.dumps(
                        {"code": "ResourceNotFound", "message": "no job execution " + job,
                         "clientToken": token, "timestamp": int(time.time())}), qos=1)
                else:
                    client.publish(self.base + rest + "/accepted", json.dumps(
                        {"execution": dict(e, thingName=self.args.thing),
                         "clientToken": token, "timestamp": int(time.time())}), qos=1)
                return
            job = rest[:-len("/update")]
            e = next((x for x in self.execs if x["jobId"] == job), None)
            if e is not None and self.bumps.get(job, 0) > 0:
                self.bumps[job] -= 1
                e["versionNumber"] += 1  # another client's update, just before this one
            bad = None
            code = "InvalidRequest"
            expected = body.get("expectedVersion") if isinstance(body, dict) else None
            if not isinstance(body, dict) or body.get("status") not in STATUSES:
                bad = "status must be one of " + ", ".join(sorted(STATUSES))
            elif e is None:
                bad = "no job execution " + job
            elif e["status"] in TERMINAL:
                bad = "job execution is already " + e["status"]
            elif not isinstance(body.get("statusDetails", {}), dict) or not all(
                    isinstance(v, str) and 0 < len(v) <= 1024
                    for v in body.get("statusDetails", {}).values()):
                bad = "statusDetails values must be strings of 1 to 1024 characters"
            elif expected is not None and (not isinstance(expected, int)
                                           or isinstance(expected, bool)):
                bad = "expectedVersion must be a number"
            elif expected is not None and expected != e["versionNumber"]:
                code = "VersionMismatch"
                bad = (f"expectedVersion {expected} is not the execution's version "
                       f"{e['versionNumber']}")
            if bad:
                reply = {"code": code, "message": bad, "clientToken": token,
                         "timestamp": int(time.time())}
                if code == "VersionMismatch":
                    reply["executionState"] = {"status": e["status"],
                                               "statusDetails": e["statusDetails"],
                                               "versionNumber": e["versionNumber"]}
                with open(self.args.rejected_log, "a") as f:
                    f.write(json.dumps({"jobId": job, "code": code,
                                        "expectedVersion": expected}) + "\n")
                client.publish(self.base + job + "/update/rejected", json.dumps(reply), qos=1)
                return
            e["status"] = body["status"]
            e["statusDetails"] = body.get("statusDetails", {})
            e["versionNumber"] += 1
            with open(self.args.log, "a") as f:
                f.write(json.dumps({"jobId": job, "status": e["status"],
                                    "statusDetails": e["statusDetails"],
                                    "expectedVersion": expected}) + "\n")
            reply = {"timestamp": int(time.time()), "clientToken": token}
            if body.get("includeJobExecutionState") is True:
                reply["executionState"] = {"status": e["status"],
                                           "statusDetails": e["statusDetails"],
                                           "versionNumber": e["versionNumber"]}
            client.publish(self.base + job + "/update/accepted", json.dumps(reply), qos=1)
            if e["status"] in TERMINAL:
                self.publish_next(self.base + "notify-next")

    def run(self):
        c = mqtt.Client(client_id="fake-aws-jobs", clean_session=True)
        c.tls_set(ca_certs=self.args.cafile, certfile=self.args.cert, keyfile=self.args.key,
                  tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self.on_connect
        c.on_message = self.on_message
        self.client = c
        c.connect("127.0.0.1", self.args.port)
        c.loop_forever()


def main():
    ap = argparse.ArgumentParser()
    for k in ("--cafile", "--cert", "--key", "--thing", "--jobs", "--log", "--rejected-log",
              "--ready-file"):
        ap.add_argument(k, required=True)
    ap.add_argument("--port", type=int, required=True)
    Jobs(ap.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
