#!/usr/bin/env bash
# Tags of deployment ARNs end to end (issue 15): groved runs the deployment plugin over
# TLS; the AWS CLI creates a deployment with `--tags` and tags, untags and lists its ARN
# (arn:aws:greengrass:<region>:<account>:deployments:<id>), boto3 does the same; the tags
# survive kill -9 of groved; a deployment deleted (after a cancel) takes its tags along.
# Usage: tags_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
AWS=/usr/bin/aws
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-tags "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$AWS" "$PY" jq openssl

start_deployment_alone
printf "RecipeFormatVersion: '2020-01-25'\nComponentName: e2e.Tagged\nComponentVersion: '1.0.0'\n" >"$WORK/r.yaml"
gg create-component-version --inline-recipe "fileb://$WORK/r.yaml" >/dev/null 2>&1
tags_of() { gg list-tags-for-resource --resource-arn "$1" 2>&1 | jq -c '.tags' 2>/dev/null; }

# ---- the AWS CLI ------------------------------------------------------------------------
ID=$(gg create-deployment --target-arn "$THING" --components '{"e2e.Tagged": {"componentVersion": "1.0.0"}}' \
  --tags site=lab,owner=ops | jq -r .deploymentId)
ARN=arn:aws:greengrass:us-east-1:123456789012:deployments:$ID
check "aws create-deployment --tags site=lab,owner=ops -> list-tags-for-resource on its ARN shows them" \
  test "$(tags_of "$ARN")" == '{"owner":"ops","site":"lab"}'
gg tag-resource --resource-arn "$ARN" --tags site=field,tier=1 >"$WORK/out" 2>&1
check "aws tag-resource (site=field, tier=1) -> exit 0" test $? == 0
gg untag-resource --resource-arn "$ARN" --tag-keys owner >"$WORK/out" 2>&1
check "aws untag-resource --tag-keys owner -> exit 0" test $? == 0
check "... list-tags-for-resource: site=field, tier=1" \
  test "$(tags_of "$ARN")" == '{"site":"field","tier":"1"}'
check "... get-deployment shows the same tags" \
  test "$(gg get-deployment --deployment-id "$ID" | jq -c .tags)" == '{"site":"field","tier":"1"}'
gg list-tags-for-resource --resource-arn "arn:aws:greengrass:us-east-1:123456789012:deployments:no-such" >"$WORK/out" 2>&1
check "aws list-tags-for-resource of an unknown deployment -> ResourceNotFoundException" \
  grep -q ResourceNotFoundException "$WORK/out"

# ---- boto3 ------------------------------------------------------------------------------
OUT=$("$PY" - "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$THING" "$ARN" <<'EOF' 2>&1
import sys
import boto3, botocore
endpoint, ca, thing, arn = sys.argv[1:5]
gg = boto3.client("greengrassv2", endpoint_url=endpoint, verify=ca, region_name="us-east-1")
d = gg.create_deployment(targetArn=thing, components={"e2e.Tagged": {"componentVersion": "1.0.0"}},
                         tags={"made-by": "boto3"})
barn = f"arn:aws:greengrass:us-east-1:123456789012:deployments:{d['deploymentId']}"
print("created", gg.list_tags_for_resource(resourceArn=barn)["tags"] == {"made-by": "boto3"})
gg.tag_resource(resourceArn=arn, tags={"by": "boto3"})
print("tagged", gg.list_tags_for_resource(resourceArn=arn)["tags"] == {"site": "field", "tier": "1", "by": "boto3"})
try:
    gg.tag_resource(resourceArn=arn, tags={f"k{i}": "v" for i in range(48)})
    print("limit False")
except botocore.exceptions.ClientError as e:
    print("limit", e.response["Error"]["Code"] == "ValidationException")
gg.untag_resource(resourceArn=arn, tagKeys=["tier"])
print("untagged", gg.list_tags_for_resource(resourceArn=arn)["tags"] == {"site": "field", "by": "boto3"})
print("id", d["deploymentId"])
EOF
)
check "boto3 create_deployment(tags=...) -> its ARN's tags" grep -qx "created True" <<<"$OUT"
check "boto3 tag_resource on the CLI's deployment -> merged" grep -qx "tagged True" <<<"$OUT"
check "boto3 tag_resource past 50 tags -> ValidationException, nothing changed" grep -qx "limit True" <<<"$OUT"
check "boto3 untag_resource -> removed" grep -qx "untagged True" <<<"$OUT"
[[ $FAILED == 0 ]] || echo "$OUT"
BID=$(sed -n 's/^id //p' <<<"$OUT")
BARN=arn:aws:greengrass:us-east-1:123456789012:deployments:$BID

# ---- kill -9: the tags are journaled ------------------------------------------------------
stop_groved KILL
launch_deployment "groved did not come back after kill -9"
check "after kill -9 and a restart: the CLI's deployment keeps site=field, by=boto3" \
  test "$(tags_of "$ARN")" == '{"by":"boto3","site":"field"}'
check "... and boto3's keeps made-by=boto3" test "$(tags_of "$BARN")" == '{"made-by":"boto3"}'

# ---- deleting a deployment drops its tags ---------------------------------------------------
# The CLI's deployment is INACTIVE (boto3's superseded it): it can be deleted at once.
gg delete-deployment --deployment-id "$ID" >"$WORK/out" 2>&1
check "aws delete-deployment of the superseded deployment -> exit 0" test $? == 0
gg list-tags-for-resource --resource-arn "$ARN" >"$WORK/out" 2>&1
check "... its ARN's tags are gone with it: ResourceNotFoundException" \
  grep -q ResourceNotFoundException "$WORK/out"
check "... boto3's deployment keeps its tags" test "$(tags_of "$BARN")" == '{"made-by":"boto3"}'
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
finish
