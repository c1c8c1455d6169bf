#!/usr/bin/python3
"""boto3's `greengrass` client against groved's group CA operations (README "Group CA").

Usage: group_ca_test.py ENDPOINT CA_BUNDLE STATE_FILE PHASE
Phases (group_ca_test.sh runs them in order, with devices on the broker between them):
  setup    definitions (core-1, devices A and B, A -> B on a/to/b), a group, its first CA,
           Get/List, the certificate configuration, refusals; the group deployed
  rotate   a second CA (the rotation): both listed, the second the newest
  restart  after kill -9 of groved: both CAs, their certificates and the configuration
Prints PASS/FAIL lines; exits 1 on any failure.
"""
import json
import os
import sys
import time

import botocore.exceptions

import support
from support import ACCOUNT, REGION, check

ENDPOINT, CA, STATE, PHASE = sys.argv[1:5]
gg = support.client("greengrass", ENDPOINT, CA)
state = json.load(open(STATE)) if os.path.exists(STATE) else {}
thing = support.thing_arn


def error_of(fn, **kw):
    """(code, status, message) of the ClientError fn(**kw) raises; None if none."""
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        return (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"],
                e.response["Error"]["Message"])
    return None


def device(id_, name):
    return {"Id": id_, "ThingArn": thing(name),
            "CertificateArn": f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/0123abcd"}


if PHASE == "setup":
    core = gg.create_core_definition(InitialVersion={"Cores": [device("c", "core-1")]})
    devs = gg.create_device_definition(InitialVersion={"Devices": [device("a", "A"),
                                                                  device("b", "B")]})
    subs = gg.create_subscription_definition(InitialVersion={"Subscriptions": [
        {"Id": "a-b", "Source": thing("A"), "Subject": "a/to/b", "Target": thing("B")}]})
    group = gg.create_group(Name="home", InitialVersion={
        "CoreDefinitionVersionArn": core["LatestVersionArn"],
        "DeviceDefinitionVersionArn": devs["LatestVersionArn"],
        "SubscriptionDefinitionVersionArn": subs["LatestVersionArn"]})
    gid = group["Id"]
    check("ListGroupCertificateAuthorities of a new group: none",
          gg.list_group_certificate_authorities(GroupId=gid)["GroupCertificateAuthorities"] == [])
    conf = gg.get_group_certificate_configuration(GroupId=gid)
    check("GetGroupCertificateConfiguration: 7 days (604800000 ms) by default, as a string",
          conf["CertificateExpiryInMilliseconds"] == "604800000" and conf["GroupId"] == gid, conf)
    arn = gg.create_group_certificate_authority(GroupId=gid)["GroupCertificateAuthorityArn"]
    ca1 = arn.rsplit("/", 1)[1]
    check("CreateGroupCertificateAuthority: the ARN under the group's, a 64-hex id",
          arn == f"{group['Arn']}/certificateauthorities/{ca1}" and len(ca1) == 64, arn)
    got = gg.get_group_certificate_authority(GroupId=gid, CertificateAuthorityId=ca1)
    check("GetGroupCertificateAuthority: its ARN, id and PEM certificate (no key)",
          got["GroupCertificateAuthorityArn"] == arn and got["GroupCertificateAuthorityId"] == ca1
          and got["PemEncodedCertificate"].startswith("-----BEGIN CERTIFICATE-----")
          and "PRIVATE" not in json.dumps(got), got)
    lst = gg.list_group_certificate_authorities(GroupId=gid)["GroupCertificateAuthorities"]
    check("ListGroupCertificateAuthorities: the one CA",
          lst == [{"GroupCertificateAuthorityArn": arn, "GroupCertificateAuthorityId": ca1}], lst)
    conf = gg.update_group_certificate_configuration(GroupId=gid,
                                                     CertificateExpiryInMilliseconds="864000000")
    expiry = int(conf.get("CertificateAuthorityExpiryInMilliseconds", "0"))
    check("UpdateGroupCertificateConfiguration 10 days: answered, with the CA's expiry (ms "
          "since the epoch, years ahead)",
          conf["CertificateExpiryInMilliseconds"] == "864000000"
          and expiry > (time.time() + 5 * 365 * 86400) * 1000, conf)
    for bad in ("604799999", "2592000001", "a week"):
        e = error_of(gg.update_group_certificate_configuration, GroupId=gid,
                     CertificateExpiryInMilliseconds=bad)
        check(f"CertificateExpiryInMilliseconds {bad!r} -> BadRequestException naming the field",
              e and e[:2] == ("BadRequestException", 400)
              and e[2].startswith("CertificateExpiryInMilliseconds: must be"), e)
    unknown = "00000000-0000-4000-8000-000000000000"
    e = error_of(gg.create_group_certificate_authority, GroupId=unknown)
    check("CreateGroupCertificateAuthority of an unknown group -> IdNotFoundException 404",
          e and e[:2] == ("IdNotFoundException", 404) and unknown in e[2], e)
    e = error_of(gg.get_group_certificate_authority, GroupId=gid, CertificateAuthorityId="f" * 64)
    check("GetGroupCertificateAuthority of an unknown CA -> IdNotFoundException 404",
          e and e[:2] == ("IdNotFoundException", 404), e)
    e = error_of(gg.get_group_certificate_configuration, GroupId=unknown)
    check("GetGroupCertificateConfiguration of an unknown group -> IdNotFoundException",
          e and e[0] == "IdNotFoundException", e)
    d = gg.create_deployment(GroupId=gid, DeploymentType="NewDeployment",
                             GroupVersionId=group["LatestVersion"])
    st = support.wait(lambda: (lambda s: s if s["DeploymentStatus"] in ("Success", "Failure")
                               else None)(gg.get_deployment_status(
                                   GroupId=gid, DeploymentId=d["DeploymentId"])))
    check("the group deployed -> Success", st and st["DeploymentStatus"] == "Success", st)
    state.update(group=gid, ca1=ca1, pem1=got["PemEncodedCertificate"])
    open(os.path.join(os.path.dirname(STATE), "ca1.pem"), "w").write(got["PemEncodedCertificate"])

elif PHASE == "rotate":
    gid = state["group"]
    lst = gg.list_group_certificate_authorities(GroupId=gid)["GroupCertificateAuthorities"]
    ids = [c["GroupCertificateAuthorityId"] for c in lst]
    check("after the rotation: both CAs listed, oldest first",
          len(ids) == 2 and ids[0] == state["ca1"], lst)
    state["ca2"] = ids[-1]
    pem2 = gg.get_group_certificate_authority(GroupId=gid, CertificateAuthorityId=ids[-1])[
        "PemEncodedCertificate"]
    check("... the new CA's certificate is another one", pem2 != state["pem1"])
    open(os.path.join(os.path.dirname(STATE), "ca2.pem"), "w").write(pem2)

elif PHASE == "restart":
    gid = state["group"]
    lst = gg.list_group_certificate_authorities(GroupId=gid)["GroupCertificateAuthorities"]
    check("after kill -9 of groved: both CAs still listed",
          [c["GroupCertificateAuthorityId"] for c in lst] == [state["ca1"], state["ca2"]], lst)
    got = gg.get_group_certificate_authority(GroupId=gid, CertificateAuthorityId=state["ca1"])
    check("... the first CA's certificate unchanged", got["PemEncodedCertificate"] == state["pem1"])
    conf = gg.get_group_certificate_configuration(GroupId=gid)
    check("... and the certificate configuration (10 days)",
          conf["CertificateExpiryInMilliseconds"] == "864000000", conf)

elif PHASE == "retire":
    gid = state["group"]
    d = gg.reset_deployments(GroupId=gid)
    st = support.wait(lambda: (lambda s: s if s["DeploymentStatus"] in ("Success", "Failure")
                               else None)(gg.get_deployment_status(
                                   GroupId=gid, DeploymentId=d["DeploymentId"])))
    check("ResetDeployments -> Success", st and st["DeploymentStatus"] == "Success", st)
    gg.delete_group(GroupId=gid)
    e = error_of(gg.list_group_certificate_authorities, GroupId=gid)
    check("DeleteGroup: its CAs are gone (IdNotFoundException)",
          e and e[0] == "IdNotFoundException", e)

json.dump(state, open(STATE, "w"))
support.finish()
