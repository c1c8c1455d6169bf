#!/usr/bin/python3
"""boto3's `greengrass` client against groved: the IP detector, role associations and bulk
deployments (issue 16).

Usage: v1_more_test.py ENDPOINT CA_BUNDLE STATE_FILE INPUT_DIR MIRROR_DIR PHASE
Phases (v1_more_test.sh runs them in order):
  detector  GetConnectivityInfo of the core is exactly this machine's addresses (`ip -j
            addr`); a manual entry stays; an address added to `lo` appears and goes live
  roles     AssociateRoleToGroup / GetAssociatedRole / DisassociateRoleFromGroup and the
            account's service role: shapes, ARN checks, 404 for an unknown group
  bulk      StartBulkDeployment from a file:// input file (its last good record: `second`):
            each record a deployment, bad ones failed records with the reason; status,
            metrics, detailed reports, StopBulkDeployment of an ended one
  bulk2     one from an s3:// input file (the mirror; its last record: `first`), refusals,
            ListBulkDeployments
  after     (after kill -9 of groved) the roles and the bulk deployments as they were
Prints PASS/FAIL (and SKIP) lines; exits 1 on any failure.
"""
import ipaddress
import json
import os
import subprocess
import sys
import time

import botocore.exceptions

import support
from support import ACCOUNT, REGION, check

ENDPOINT, CA, STATE, INPUT_DIR, MIRROR_DIR, PHASE = sys.argv[1:7]
gg = support.client("greengrass", ENDPOINT, CA)
state = json.load(open(STATE)) if os.path.exists(STATE) else {}
ROLE = f"arn:aws:iam::{ACCOUNT}:role/service-role/GreengrassGroupRole"


def save():
    json.dump(state, open(STATE, "w"))


def error_of(fn, **kw):
    """(code, status, message) of the ClientError fn(**kw) raises; None if none."""
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        return (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"],
                e.response["Error"]["Message"])
    return None


def machine_addresses():
    """(interface, address) of every IPv4 address of an interface that is up, loopback
    included (the profile's include_loopback), as `ip -j addr` shows them."""
    out = set()
    for link in json.loads(subprocess.check_output(["ip", "-j", "addr"])):
        if "UP" not in link.get("flags", []):
            continue
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                out.add((link["ifname"], a["local"]))
    return out


def connectivity():
    return gg.get_connectivity_info(ThingName="core-1").get("ConnectivityInfo", [])


def detected():
    return {(e["Metadata"].split(" ", 1)[1], e["HostAddress"]) for e in connectivity()
            if e.get("Metadata", "").startswith("grove:ip-detector")}


def bulk_done(bid):
    st = {}
    for _ in range(600):
        st = gg.get_bulk_deployment_status(BulkDeploymentId=bid)
        if st["BulkDeploymentStatus"] in ("Completed", "Stopped", "Failed"):
            return st
        time.sleep(0.1)
    return st


thing = support.thing_arn


def device(id_, name):
    return {"Id": id_, "ThingArn": thing(name),
            "CertificateArn": f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/0123abcd"}


def line(g, version=None, **extra):
    """One record of a bulk input file for group `g` (a name in the state, or an id)."""
    groups = state["groups"]
    rec = {"GroupId": groups[g]["id"] if g in groups else g,
           "GroupVersionId": version or (groups[g]["version"] if g in groups else "v1"),
           "DeploymentType": "NewDeployment"}
    rec.update(extra)
    return json.dumps(rec) + "\n"


if PHASE == "detector":
    want = machine_addresses()
    got = support.wait(lambda: detected() if detected() == want else None, 10) or detected()
    check(f"GetConnectivityInfo of core-1: exactly this machine's IPv4 addresses ({sorted(want)})",
          got == want, f"detected {sorted(got)}")
    entries = connectivity()
    check("... each on port 8883 (discovery.dns_sd_port), Id ip-detector:<interface>:<address>",
          entries and all(e["PortNumber"] == 8883
                          and e["Id"] == f"ip-detector:{e['Metadata'].split(' ', 1)[1]}:{e['HostAddress']}"
                          for e in entries), entries)
    # A manual entry (UpdateConnectivityInfo) is not overwritten by the detector.
    manual = {"Id": "lan", "HostAddress": "core.example", "PortNumber": 8883, "Metadata": "manual"}
    gg.update_connectivity_info(ThingName="core-1", ConnectivityInfo=[manual])
    added = subprocess.run(["ip", "addr", "add", "127.0.0.42/8", "dev", "lo"],
                           capture_output=True, text=True)
    if added.returncode != 0:
        print(f"SKIP: an address added to lo appears live: `ip addr add` failed "
              f"({added.stderr.strip()}): this test may not change addresses")
        state["skipped_live"] = True
    else:
        try:
            seen = support.wait(lambda: ("lo", "127.0.0.42") in detected(), 20)
            check("an address added to lo (127.0.0.42) appears in GetConnectivityInfo, live "
                  "(netlink)", seen, connectivity())
            e = connectivity()
            check("... and the manual entry is kept after the detected ones",
                  e and e[-1] == manual and all(x["Metadata"].startswith("grove:ip-detector")
                                                for x in e[:-1]), e)
        finally:
            subprocess.run(["ip", "addr", "del", "127.0.0.42/8", "dev", "lo"])
        gone = support.wait(lambda: ("lo", "127.0.0.42") not in detected(), 20)
        check("... and goes when it is removed", gone, connectivity())
    check("... the detected set is this machine's again", detected() == machine_addresses(),
          sorted(detected()))
    # The v2 client reads the same list (one implementation).
    v2 = support.client("greengrassv2", ENDPOINT, CA)
    e2 = v2.get_connectivity_info(thingName="core-1").get("connectivityInfo", [])
    check("greengrassv2 GetConnectivityInfo reads the same list",
          [x["hostAddress"] for x in e2] == [x["HostAddress"] for x in connectivity()], e2)

elif PHASE == "roles":
    core = gg.create_core_definition(Name="core", InitialVersion={"Cores": [device("c", "core-1")]})
    devs = gg.create_device_definition(
        Name="devices", InitialVersion={"Devices": [device("a", "A"), device("b", "B")]})
    groups = {}
    for name in ("first", "second", "third"):
        g = gg.create_group(Name=name, InitialVersion={
            "CoreDefinitionVersionArn": core["LatestVersionArn"],
            "DeviceDefinitionVersionArn": devs["LatestVersionArn"]})
        groups[name] = {"id": g["Id"], "version": g["LatestVersion"], "arn": g["Arn"]}
    state["groups"] = groups
    gid = groups["first"]["id"]
    err = error_of(gg.get_associated_role, GroupId=gid)
    check("GetAssociatedRole before any: 404 IdNotFoundException", err and err[:2] == ("IdNotFoundException", 404), err)
    a = gg.associate_role_to_group(GroupId=gid, RoleArn=ROLE)
    check("AssociateRoleToGroup: AssociatedAt (ISO 8601)", a["AssociatedAt"].endswith("Z"), a)
    r = gg.get_associated_role(GroupId=gid)
    check("GetAssociatedRole: the RoleArn and AssociatedAt", r["RoleArn"] == ROLE
          and r["AssociatedAt"] == a["AssociatedAt"], r)
    for bad in ("not-an-arn", f"arn:aws:iam::{ACCOUNT}:user/bob", "arn:aws:iam::999999999999:role/x",
                f"arn:aws:iam::{ACCOUNT}:role/bad name"):
        err = error_of(gg.associate_role_to_group, GroupId=gid, RoleArn=bad)
        check(f"AssociateRoleToGroup {bad!r}: BadRequestException naming RoleArn",
              err and err[:2] == ("BadRequestException", 400) and err[2].startswith("RoleArn:"), err)
    err = error_of(gg.associate_role_to_group, GroupId="nope", RoleArn=ROLE)
    check("AssociateRoleToGroup of an unknown group: 404", err and err[:2] == ("IdNotFoundException", 404), err)
    err = error_of(gg.get_associated_role, GroupId="nope")
    check("GetAssociatedRole of an unknown group: 404", err and err[1] == 404, err)
    # Associated on the second, then taken off.
    gg.associate_role_to_group(GroupId=groups["second"]["id"], RoleArn=ROLE + "2")
    d = gg.disassociate_role_from_group(GroupId=groups["second"]["id"])
    check("DisassociateRoleFromGroup: DisassociatedAt", d["DisassociatedAt"].endswith("Z"), d)
    err = error_of(gg.get_associated_role, GroupId=groups["second"]["id"])
    check("... then GetAssociatedRole is 404", err and err[1] == 404, err)
    # The account's service role.
    err = error_of(gg.get_service_role_for_account)
    check("GetServiceRoleForAccount before any: 404", err and err[1] == 404, err)
    s = gg.associate_service_role_to_account(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/Greengrass_ServiceRole")
    check("AssociateServiceRoleToAccount: AssociatedAt", s["AssociatedAt"].endswith("Z"), s)
    sr = gg.get_service_role_for_account()
    check("GetServiceRoleForAccount: the role", sr["RoleArn"].endswith(":role/Greengrass_ServiceRole"), sr)
    err = error_of(gg.associate_service_role_to_account, RoleArn="arn:aws:s3:::bucket")
    check("AssociateServiceRoleToAccount of an S3 ARN: BadRequestException naming RoleArn",
          err and err[0] == "BadRequestException" and err[2].startswith("RoleArn:"), err)
    state["role_at"] = a["AssociatedAt"]

elif PHASE == "bulk":
    groups = state["groups"]
    text = (line("first") + "{not json\n" + line("no-such-group") + line("first", "no-such-version")
            + line("third", DeploymentType="Redeployment") + line("second"))
    with open(f"{INPUT_DIR}/bulk.jsonl", "w") as f:
        f.write(text)
    b = gg.start_bulk_deployment(InputFileUri=f"file://{INPUT_DIR}/bulk.jsonl",
                                 ExecutionRoleArn=ROLE, AmznClientToken="bulk-1",
                                 tags={"wave": "1"})
    bid = b["BulkDeploymentId"]
    check("StartBulkDeployment: BulkDeploymentId and its ARN",
          b["BulkDeploymentArn"] == f"arn:aws:greengrass:{REGION}:{ACCOUNT}:/greengrass/bulk/deployments/{bid}", b)
    again = gg.start_bulk_deployment(InputFileUri=f"file://{INPUT_DIR}/bulk.jsonl",
                                     ExecutionRoleArn=ROLE, AmznClientToken="bulk-1",
                                     tags={"wave": "1"})
    check("... the same X-Amzn-Client-Token and request: the same answer",
          again["BulkDeploymentId"] == bid, again)
    st = bulk_done(bid)
    check("GetBulkDeploymentStatus: Completed", st["BulkDeploymentStatus"] == "Completed", st)
    check("... BulkDeploymentMetrics: 6 processed, 4 invalid, 0 retries",
          st["BulkDeploymentMetrics"] == {"RecordsProcessed": 6, "InvalidInputRecords": 4,
                                          "RetryAttempts": 0}, st)
    check("... its tags and CreatedAt", st.get("tags") == {"wave": "1"} and st["CreatedAt"].endswith("Z"), st)
    reps = gg.list_bulk_deployment_detailed_reports(BulkDeploymentId=bid)["Deployments"]
    statuses = [r["DeploymentStatus"] for r in reps]
    check("ListBulkDeploymentDetailedReports: one report per record, in order "
          "(Success, 4 Failure, Success)",
          statuses == ["Success", "Failure", "Failure", "Failure", "Failure", "Success"], reps)
    if len(reps) == 6:
        check("... a made deployment: DeploymentId/Arn, GroupArn of the version, NewDeployment",
              reps[0]["GroupArn"] == groups["first"]["arn"] + "/versions/" + groups["first"]["version"]
              and reps[0]["DeploymentArn"].endswith("/deployments/" + reps[0]["DeploymentId"])
              and reps[0]["DeploymentType"] == "NewDeployment", reps[0])
        check("... the bad line failed with its reason", reps[1]["ErrorMessage"] == "line 2: not JSON (or not UTF-8)"
              and "DeploymentId" not in reps[1], reps[1])
        check("... the unknown group failed with IdNotFoundException",
              reps[2]["ErrorDetails"][0]["DetailedErrorCode"] == "IdNotFoundException"
              and "no-such-group" in reps[2]["ErrorMessage"], reps[2])
        check("... the unknown version with VersionNotFoundException",
              reps[3]["ErrorDetails"][0]["DetailedErrorCode"] == "VersionNotFoundException", reps[3])
        check("... a Redeployment record refused (bulk deployments take NewDeployment only)",
              "NewDeployment" in reps[4]["ErrorMessage"], reps[4])
        dep = gg.get_deployment_status(GroupId=groups["second"]["id"], DeploymentId=reps[5]["DeploymentId"])
        check("... the last record's deployment is the group's, Success", dep["DeploymentStatus"] == "Success", dep)
        state["second_deployment"] = reps[5]["DeploymentId"]
    page = gg.list_bulk_deployment_detailed_reports(BulkDeploymentId=bid, MaxResults="4")
    check("... paged: 4 then NextToken", len(page["Deployments"]) == 4 and "NextToken" in page, page)
    err = error_of(gg.stop_bulk_deployment, BulkDeploymentId=bid)
    check("StopBulkDeployment of a Completed one: BadRequestException",
          err and err[0] == "BadRequestException" and "Completed" in err[2], err)
    err = error_of(gg.get_bulk_deployment_status, BulkDeploymentId="nope")
    check("GetBulkDeploymentStatus of an unknown id: 404", err and err[1] == 404, err)
    state["bulk1"] = bid

elif PHASE == "bulk2":
    bid = state["bulk1"]
    # The s3:// mirror (artifacts_base_url): the third group, then the first again.
    os.makedirs(f"{MIRROR_DIR}/bucket", exist_ok=True)
    with open(f"{MIRROR_DIR}/bucket/wave2.jsonl", "w") as f:
        f.write(line("third") + line("first"))
    b2 = gg.start_bulk_deployment(InputFileUri="s3://bucket/wave2.jsonl", ExecutionRoleArn=ROLE)
    st = bulk_done(b2["BulkDeploymentId"])
    check("an s3:// input file through artifacts_base_url: Completed, 2 processed, 0 invalid",
          st["BulkDeploymentStatus"] == "Completed"
          and st["BulkDeploymentMetrics"]["RecordsProcessed"] == 2
          and st["BulkDeploymentMetrics"]["InvalidInputRecords"] == 0, st)
    # Refusals: a file outside artifacts_file_dir, a missing s3 key, bad requests.
    b3 = gg.start_bulk_deployment(InputFileUri="file:///etc/passwd", ExecutionRoleArn=ROLE)
    st = bulk_done(b3["BulkDeploymentId"])
    check("a file:// input outside artifacts_file_dir: Failed, saying why",
          st["BulkDeploymentStatus"] == "Failed" and "InputFileUri" in st.get("ErrorMessage", ""), st)
    b4 = gg.start_bulk_deployment(InputFileUri="s3://bucket/missing.jsonl", ExecutionRoleArn=ROLE)
    st = bulk_done(b4["BulkDeploymentId"])
    check("a missing s3 key: Failed with the fetch's reason",
          st["BulkDeploymentStatus"] == "Failed" and st.get("ErrorDetails"), st)
    err = error_of(gg.start_bulk_deployment, InputFileUri="ftp://x/y", ExecutionRoleArn=ROLE)
    check("StartBulkDeployment of an ftp:// URI: BadRequestException naming InputFileUri",
          err and err[0] == "BadRequestException" and err[2].startswith("InputFileUri"), err)
    err = error_of(gg.start_bulk_deployment, InputFileUri="s3://b/k", ExecutionRoleArn="nope")
    check("... of a bad ExecutionRoleArn: BadRequestException naming it",
          err and err[0] == "BadRequestException" and err[2].startswith("ExecutionRoleArn"), err)
    ids = [x["BulkDeploymentId"] for x in gg.list_bulk_deployments()["BulkDeployments"]]
    check("ListBulkDeployments: newest first",
          ids == [b4["BulkDeploymentId"], b3["BulkDeploymentId"], b2["BulkDeploymentId"], bid], ids)
    pages = list(gg.get_paginator("list_bulk_deployments").paginate(PaginationConfig={"PageSize": 3}))
    check("... the paginator walks them in pages of 3",
          [len(p["BulkDeployments"]) for p in pages] == [3, 1], pages)
    state["bulks"] = ids

elif PHASE == "after":
    groups = state["groups"]
    r = gg.get_associated_role(GroupId=groups["first"]["id"])
    check("after kill -9: GetAssociatedRole as it was", r["RoleArn"] == ROLE
          and r["AssociatedAt"] == state["role_at"], r)
    check("... the service role too",
          gg.get_service_role_for_account()["RoleArn"].endswith(":role/Greengrass_ServiceRole"))
    ids = [x["BulkDeploymentId"] for x in gg.list_bulk_deployments()["BulkDeployments"]]
    check("... ListBulkDeployments as it was", ids == state["bulks"], ids)
    st = gg.get_bulk_deployment_status(BulkDeploymentId=state["bulk1"])
    check("... the first bulk deployment Completed with its metrics",
          st["BulkDeploymentStatus"] == "Completed"
          and st["BulkDeploymentMetrics"]["RecordsProcessed"] == 6, st)
    reps = gg.list_bulk_deployment_detailed_reports(BulkDeploymentId=state["bulk1"])["Deployments"]
    check("... and its 6 reports", [r["DeploymentStatus"] for r in reps]
          == ["Success", "Failure", "Failure", "Failure", "Failure", "Success"], reps)

save()
support.finish()
