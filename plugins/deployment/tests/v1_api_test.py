#!/usr/bin/python3
"""boto3's `greengrass` client (Debian's python3-boto3) against groved's v1 group API.

Usage: v1_api_test.py ENDPOINT CA_BUNDLE STATE_FILE PHASE
Phases (v1_api_test.sh runs them in order, checking the broker between them):
  build     definitions of every kind, a group with InitialVersion, checks and errors
  deploy    NewDeployment of the group's latest version, waited to Success
  redeploy  a new subscription definition version and group version, deployed
  refused   the first group version after its device definition was deleted: Failure
  kernel    a Redeployment the kernel refuses (the plugin may not set the group): Failure
  status    the deployments and their statuses as they were (after a restart)
  reset     ResetDeployments: Success
Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, READONLY_KEY_ID (allowed GetGroup
only). Prints PASS/FAIL lines; exits 1 on any failure.
"""
import json
import os
import sys
import time

import botocore.exceptions

import support
from support import ACCOUNT, REGION, check

ENDPOINT, CA, STATE, PHASE = sys.argv[1:5]
def client(key=None):
    return support.client("greengrass", ENDPOINT, CA, key)


def error_of(fn, **kw):
    """(code, status, message) of the ClientError fn(**kw) raises; None if none."""
    try:
        fn(**kw)
    except botocore.exceptions.ClientError as e:
        return (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"],
                e.response["Error"]["Message"])
    return None


thing = support.thing_arn


def device(id_, name):
    return {"Id": id_, "ThingArn": thing(name),
            "CertificateArn": f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/0123abcd"}


def sub(id_, source, subject, target):
    return {"Id": id_, "Source": source, "Subject": subject, "Target": target}


def wait_status(gg, group, dep, until=("Success", "Failure")):
    st = {}
    for _ in range(300):
        st = gg.get_deployment_status(GroupId=group, DeploymentId=dep)
        if st["DeploymentStatus"] in until:
            return st
        time.sleep(0.1)
    return st


gg = client()
state = json.load(open(STATE)) if os.path.exists(STATE) else {}

if PHASE == "build":
    core = gg.create_core_definition(Name="core", InitialVersion={"Cores": [device("c", "core-1")]})
    check("CreateCoreDefinition: Id, Arn as AWS forms it, LatestVersionArn, ISO timestamps",
          core["Arn"] == f"arn:aws:greengrass:{REGION}:{ACCOUNT}:/greengrass/definition/cores/{core['Id']}"
          and core["LatestVersionArn"] == core["Arn"] + "/versions/" + core["LatestVersion"]
          and core["CreationTimestamp"].endswith("Z") and "T" in core["CreationTimestamp"], core)
    devs = gg.create_device_definition(
        Name="devices", InitialVersion={"Devices": [device("a", "A"), device("b", "B")]},
        tags={"site": "lab"})
    subs = gg.create_subscription_definition(
        Name="routes",
        InitialVersion={"Subscriptions": [sub("a-b", thing("A"), "a/to/b", thing("B"))]})
    # The other kinds, each through its own operations (one generic handler serves them).
    fn = gg.create_function_definition(Name="fns")
    fv = gg.create_function_definition_version(
        FunctionDefinitionId=fn["Id"],
        Functions=[{"Id": "f", "FunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:unused:1",
                    "FunctionConfiguration": {"Executable": "unused", "Timeout": 3,
                                              "Pinned": False}}])
    check("CreateFunctionDefinitionVersion: Version and Arn",
          fv["Arn"] == fn["Arn"] + "/versions/" + fv["Version"], fv)
    res = gg.create_resource_definition(
        Name="res", InitialVersion={"Resources": [
            {"Id": "tmp", "Name": "tmp", "ResourceDataContainer": {
                "LocalVolumeResourceData": {"SourcePath": "/srv", "DestinationPath": "/srv"}}}]})
    log = gg.create_logger_definition(
        Name="logs", InitialVersion={"Loggers": [
            {"Id": "l", "Component": "GreengrassSystem", "Level": "INFO", "Type": "FileSystem",
             "Space": 1024}]})
    got = gg.get_logger_definition_version(LoggerDefinitionId=log["Id"],
                                           LoggerDefinitionVersionId=log["LatestVersion"])
    check("GetLoggerDefinitionVersion gives the Definition back",
          got["Definition"]["Loggers"][0]["Space"] == 1024, got)
    gg.update_resource_definition(ResourceDefinitionId=res["Id"], Name="resources")
    check("UpdateResourceDefinition renames",
          gg.get_resource_definition(ResourceDefinitionId=res["Id"])["Name"] == "resources")
    check("GetDeviceDefinition carries its tags",
          gg.get_device_definition(DeviceDefinitionId=devs["Id"])["tags"] == {"site": "lab"})
    # Errors, each with its type and status.
    e = error_of(gg.create_subscription_definition_version, SubscriptionDefinitionId=subs["Id"],
                 Subscriptions=[sub("x", "device:A", "a/b", "cloud")])
    check("a subscription whose Source is no ARN -> BadRequestException 400 naming the field",
          e and e[:2] == ("BadRequestException", 400) and e[2].startswith("Subscriptions[0].Source:"), e)
    e = error_of(gg.create_device_definition_version, DeviceDefinitionId=devs["Id"],
                 Devices=[device(f"d{i}", f"t{i}") for i in range(2501)])
    check("2,501 devices -> BadRequestException 'Devices: 2501 entries; at most 2500'",
          e and e[0] == "BadRequestException" and e[2] == "Devices: 2501 entries; at most 2500", e)
    e = error_of(gg.create_logger_definition_version, LoggerDefinitionId=log["Id"],
                 Loggers=[{"Id": "c", "Component": "Lambda", "Level": "INFO", "Type": "AWSCloudWatch"}])
    check("an AWSCloudWatch logger -> BadRequestException (no cloud logging on the device)",
          e and e[0] == "BadRequestException" and "AWSCloudWatch" in e[2], e)
    e = error_of(gg.get_core_definition, CoreDefinitionId="00000000-0000-4000-8000-000000000000")
    check("an unknown definition -> IdNotFoundException 404", e and e[:2] == ("IdNotFoundException", 404), e)
    e = error_of(gg.get_core_definition_version, CoreDefinitionId=core["Id"],
                 CoreDefinitionVersionId="nope")
    check("an unknown version -> VersionNotFoundException 404",
          e and e[:2] == ("VersionNotFoundException", 404), e)
    e = error_of(client(os.environ["READONLY_KEY_ID"]).create_group, Name="x")
    check("a key allowed GetGroup only may not CreateGroup -> AccessDeniedException 403",
          e and e[:2] == ("AccessDeniedException", 403), e)
    # The group: its first version points at the definitions' versions.
    version = {"CoreDefinitionVersionArn": core["LatestVersionArn"],
               "DeviceDefinitionVersionArn": devs["LatestVersionArn"],
               "SubscriptionDefinitionVersionArn": subs["LatestVersionArn"]}
    e = error_of(gg.create_group, Name="home", InitialVersion={
        **version, "SubscriptionDefinitionVersionArn": gg.create_subscription_definition(
            InitialVersion={"Subscriptions": [sub("x", thing("A"), "a/x", thing("Z"))]})["LatestVersionArn"]})
    check("a group version whose subscription names a device not in the group -> BadRequestException",
          e and e[0] == "BadRequestException" and "thing 'Z' is not a device of the group" in e[2], e)
    group = gg.create_group(Name="home", InitialVersion=version, tags={"team": "edge"},
                            AmznClientToken="group-token-1")
    again = gg.create_group(Name="home", InitialVersion=version, tags={"team": "edge"},
                            AmznClientToken="group-token-1")
    check("CreateGroup with InitialVersion; the same X-Amzn-Client-Token answers the same group",
          again["Id"] == group["Id"] and group["LatestVersion"], (group, again))
    gv = gg.get_group_version(GroupId=group["Id"], GroupVersionId=group["LatestVersion"])
    check("GetGroupVersion: the definition version ARNs", gv["Definition"] == version, gv)
    tags = gg.list_tags_for_resource(ResourceArn=group["Arn"])["tags"]
    gg.tag_resource(ResourceArn=group["Arn"], tags={"stage": "test"})
    gg.untag_resource(ResourceArn=group["Arn"], TagKeys=["team"])
    check("tags: CreateGroup's, TagResource, UntagResource, ListTagsForResource",
          tags == {"team": "edge"}
          and gg.list_tags_for_resource(ResourceArn=group["Arn"])["tags"] == {"stage": "test"})
    # Pagination with the client's own paginator.
    for i in range(5):
        gg.create_group(Name=f"spare-{i}")
    pages = list(gg.get_paginator("list_groups").paginate(PaginationConfig={"PageSize": 2}))
    names = [g["Name"] for p in pages for g in p["Groups"]]
    check("ListGroups paginated 2 by 2: 3 pages, every group once",
          len(pages) == 3 and sorted(names) == sorted(["home"] + [f"spare-{i}" for i in range(5)]),
          (len(pages), names))
    state.update(group=group["Id"], version1=group["LatestVersion"], core=core["LatestVersionArn"],
                 devices=devs["LatestVersionArn"], devices_id=devs["Id"])

elif PHASE == "deploy":
    e = error_of(gg.reset_deployments, GroupId=state["group"])
    check("ResetDeployments of a group never deployed -> BadRequestException",
          e and e[0] == "BadRequestException" and "has not been deployed" in e[2], e)
    d = gg.create_deployment(GroupId=state["group"], DeploymentType="NewDeployment",
                             GroupVersionId=state["version1"])
    st = wait_status(gg, state["group"], d["DeploymentId"])
    check("CreateDeployment NewDeployment -> Success", st["DeploymentStatus"] == "Success", st)
    state["deploy1"] = d["DeploymentId"]

elif PHASE == "redeploy":
    subs = gg.create_subscription_definition(InitialVersion={"Subscriptions": [
        sub("a-b-2", thing("A"), "a/to/c", thing("B"))]})
    v2 = gg.create_group_version(GroupId=state["group"], CoreDefinitionVersionArn=state["core"],
                                 DeviceDefinitionVersionArn=state["devices"],
                                 SubscriptionDefinitionVersionArn=subs["LatestVersionArn"])
    d = gg.create_deployment(GroupId=state["group"], DeploymentType="NewDeployment",
                             GroupVersionId=v2["Version"])
    st = wait_status(gg, state["group"], d["DeploymentId"])
    check("a changed group version deployed -> Success", st["DeploymentStatus"] == "Success", st)
    versions = gg.list_group_versions(GroupId=state["group"])["Versions"]
    check("ListGroupVersions: both versions", [v["Version"] for v in versions]
          == [state["version1"], v2["Version"]], versions)
    state["deploy2"] = d["DeploymentId"]

elif PHASE == "refused":
    # A group version whose device definition goes before it is deployed.
    devs = gg.create_device_definition(InitialVersion={"Devices": [device("a", "A"), device("b", "B")]})
    subs = gg.create_subscription_definition(InitialVersion={"Subscriptions": [
        sub("a-b-3", thing("A"), "a/to/d", thing("B"))]})
    v3 = gg.create_group_version(GroupId=state["group"], CoreDefinitionVersionArn=state["core"],
                                 DeviceDefinitionVersionArn=devs["LatestVersionArn"],
                                 SubscriptionDefinitionVersionArn=subs["LatestVersionArn"])
    gg.delete_device_definition(DeviceDefinitionId=devs["Id"])
    d = gg.create_deployment(GroupId=state["group"], DeploymentType="NewDeployment",
                             GroupVersionId=v3["Version"])
    st = wait_status(gg, state["group"], d["DeploymentId"])
    check("a deployment whose device definition was deleted since -> Failure naming it",
          st["DeploymentStatus"] == "Failure"
          and st["ErrorMessage"].startswith("DeviceDefinitionVersionArn: device definition version")
          and st["ErrorDetails"][0]["DetailedErrorMessage"] == st["ErrorMessage"], st)

elif PHASE == "kernel":
    d = gg.create_deployment(GroupId=state["group"], DeploymentType="Redeployment",
                             DeploymentId=state["deploy2"])
    st = wait_status(gg, state["group"], d["DeploymentId"])
    check("a deployment the kernel refuses -> Failure with the kernel's reason",
          st["DeploymentStatus"] == "Failure"
          and "may not replace the group" in st["ErrorMessage"], st)

elif PHASE == "status":
    st = gg.get_deployment_status(GroupId=state["group"], DeploymentId=state["deploy2"])
    check("after a restart of groved, the deployment is still Success",
          st["DeploymentStatus"] == "Success" and st["DeploymentType"] == "NewDeployment", st)
    deps = gg.list_deployments(GroupId=state["group"])["Deployments"]
    check("ListDeployments: newest first, each with its ARN",
          deps[-1]["DeploymentId"] == state["deploy1"]
          and all(x["DeploymentArn"].endswith("/deployments/" + x["DeploymentId"]) for x in deps),
          deps)
    e = error_of(gg.delete_group, GroupId=state["group"])
    check("DeleteGroup of a deployed group -> BadRequestException (reset first)",
          e and e[0] == "BadRequestException" and "ResetDeployments" in e[2], e)

elif PHASE == "reset":
    d = gg.reset_deployments(GroupId=state["group"])
    st = wait_status(gg, state["group"], d["DeploymentId"])
    check("ResetDeployments -> Success", st["DeploymentStatus"] == "Success"
          and st["DeploymentType"] == "ResetDeployment", st)
    gg.delete_group(GroupId=state["group"])
    e = error_of(gg.get_group, GroupId=state["group"])
    check("then DeleteGroup; GetGroup -> IdNotFoundException", e and e[0] == "IdNotFoundException", e)

json.dump(state, open(STATE, "w"))
support.finish()
