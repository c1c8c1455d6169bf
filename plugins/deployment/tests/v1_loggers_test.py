#!/usr/bin/python3
"""boto3's `greengrass` client deploys logger definitions to groved (issue 16, loggers).

Usage: v1_loggers_test.py ENDPOINT CA_BUNDLE STATE_FILE PHASE TEST_FUNCTION
Phases (v1_loggers_test.sh runs them in order and checks groved's log and status between
them):
  debug       a group with a chatty function, GreengrassSystem DEBUG and Lambda INFO with
              Space 64, deployed
  error       GreengrassSystem ERROR, Lambda WARN, deployed
  again       GreengrassSystem ERROR, Lambda ERROR with Space 32, deployed
  cloudwatch  an AWSCloudWatch logger refused at CreateLoggerDefinitionVersion
  reset       ResetDeployments
Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Prints PASS/FAIL lines; exits 1
on any failure.
"""
import json
import os
import sys
import time

import botocore.exceptions

import support
from support import ACCOUNT, REGION, check

ENDPOINT, CA, STATE, PHASE, FUNCTION = sys.argv[1:6]
gg = support.client("greengrass", ENDPOINT, CA)
state = json.load(open(STATE)) if os.path.exists(STATE) else {}


def logger(id_, component, level, space=None, type_="FileSystem"):
    out = {"Id": id_, "Component": component, "Level": level, "Type": type_}
    if space is not None:
        out["Space"] = space
    return out


def wait_status(group, dep):
    st = {}
    for _ in range(300):
        st = gg.get_deployment_status(GroupId=group, DeploymentId=dep)
        if st["DeploymentStatus"] in ("Success", "Failure"):
            return st
        time.sleep(0.1)
    return st


def deploy_loggers(name, loggers):
    """A new logger definition version and group version with it, deployed; its id."""
    lv = gg.create_logger_definition_version(LoggerDefinitionId=state["loggers"], Loggers=loggers)
    version = dict(state["version"], LoggerDefinitionVersionArn=lv["Arn"])
    gv = gg.create_group_version(GroupId=state["group"], **version)
    dep = gg.create_deployment(GroupId=state["group"], DeploymentType="NewDeployment",
                               GroupVersionId=gv["Version"])
    st = wait_status(state["group"], dep["DeploymentId"])
    check(f"{name}: the deployment succeeded", st.get("DeploymentStatus") == "Success", st)
    state[name + "_deployment"] = dep["DeploymentId"]


if PHASE == "debug":
    core = gg.create_core_definition(Name="core", InitialVersion={"Cores": [
        {"Id": "c", "ThingArn": support.thing_arn("core-1"),
         "CertificateArn": f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/0123abcd"}]})
    fns = gg.create_function_definition(Name="fns", InitialVersion={"Functions": [
        {"Id": "f", "FunctionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:chatty:1",
         "FunctionConfiguration": {
             "Executable": FUNCTION, "ExecArgs": "log", "Timeout": 30, "Pinned": False,
             "Environment": {"Execution": {"IsolationMode": "NoContainer",
                                           "RunAs": {"Uid": 0, "Gid": 0}}}}}]})
    logs = gg.create_logger_definition(Name="logs")
    group = gg.create_group(Name="loggers")
    state.update(group=group["Id"], loggers=logs["Id"],
                 version={"CoreDefinitionVersionArn": core["LatestVersionArn"],
                          "FunctionDefinitionVersionArn": fns["LatestVersionArn"]})
    deploy_loggers("debug", [logger("sys", "GreengrassSystem", "DEBUG", 1024),
                             logger("fn", "Lambda", "INFO", 64)])
elif PHASE == "error":
    deploy_loggers("error", [logger("sys", "GreengrassSystem", "ERROR"),
                             logger("fn", "Lambda", "WARN", 64)])
elif PHASE == "again":
    deploy_loggers("again", [logger("sys", "GreengrassSystem", "ERROR"),
                             logger("fn", "Lambda", "ERROR", 32)])
elif PHASE == "cloudwatch":
    try:
        gg.create_logger_definition_version(
            LoggerDefinitionId=state["loggers"],
            Loggers=[logger("fs", "Lambda", "INFO", 64),
                     logger("cw", "GreengrassSystem", "INFO", type_="AWSCloudWatch")])
        err = None
    except botocore.exceptions.ClientError as e:
        err = (e.response["Error"]["Code"], e.response["Error"]["Message"])
    check("an AWSCloudWatch logger -> BadRequestException naming Loggers[1].Type, "
          "'no cloud logging on the device'",
          err and err[0] == "BadRequestException" and err[1].startswith("Loggers[1].Type:")
          and "no cloud logging on the device" in err[1], err)
    versions = gg.list_logger_definition_versions(LoggerDefinitionId=state["loggers"])["Versions"]
    check("... and no version stored (3 as before)", len(versions) == 3, versions)
elif PHASE == "reset":
    dep = gg.reset_deployments(GroupId=state["group"])
    st = wait_status(state["group"], dep["DeploymentId"])
    check("ResetDeployments succeeded", st.get("DeploymentStatus") == "Success", st)
else:
    check("known phase", False, PHASE)

json.dump(state, open(STATE, "w"))
support.finish()
