#!/usr/bin/env bash
# Model components (issue 17): groved runs ml_inference with a group holding a model of its
# own, and the deployment plugin (may_set_group) over TLS; boto3 (model_components_test.py)
# deploys components whose artifact is a model (make_models.py's CNN as a .tar.gz, then as
# a .zip): served by ml_inference under the component's name, swapped to a new version
# under load, a bad digest and an unloadable model failed with their reasons (rolled back,
# the other models serving), removed with the component.
# Usage: model_components_test.sh GROVED GROVECTL GROVE_CERTS
set -u

HERE=$(dirname "$(readlink -f "$0")")
PY=/usr/bin/python3
# shellcheck source=deployment_test_lib.sh
source "$HERE/deployment_test_lib.sh"
deployment_open grove-deployment-models "${1:?usage: $0 groved grovectl grove-certs}" "${2:?}" "${3:?}" "$PY"
PLUGIN_DIR=$(dirname "$GROVED")/../lib/grove/plugins
ML_TESTS=$(readlink -f "$HERE/../../ml_inference/tests")
[[ -f "$PLUGIN_DIR/libml_inference.so" ]] || abort "libml_inference.so must be built in $PLUGIN_DIR"

make_server_pki
# The models (make_models.py) under the directory file:// artifacts may come from.
mkdir -p "$WORK/local"
"$PY" "$ML_TESTS/make_models.py" "$WORK/local/models" >/dev/null || abort "make_models.py failed"
SHA=$("$PY" -c 'import json,sys; i=json.load(open(sys.argv[1])); print([c for c in i["cases"] if c["id"]=="conv_relu"][0]["sha256"])' "$WORK/local/models/index.json")
cat >"$WORK/group.yaml" <<YAML
name: models
resources:
  - id: conv_relu
    config:
      localMachineLearningModelResourceData:
        path: $WORK/local/models/conv_relu.onnx
        sha256: $SHA
        manifest: {inputs: [{name: x, shape: [1, 3, 8, 8]}]}
YAML
PORT=$(free_port)
cat >"$WORK/profile.yaml" <<YAML
kernel:
  log_level: info
  group: $WORK/group.yaml
plugins:
  - name: ml_inference
    config: {threads: 2}
  - name: deployment
    may_set_group: true
    config:
$(API_PORT=$PORT PKI=$WORK/pki deployment_config "artifacts_file_dir: $WORK/local")
YAML
launch_deployment
export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET
"$PY" "$HERE/model_components_test.py" "https://127.0.0.1:$PORT" "$WORK/pki/ca.crt" "$WORK" \
  "$GROVECTL" "$ML_TESTS" >"$WORK/py.out" 2>&1
tally "$WORK/py.out" $? "model_components_test.py"
check "groved and the deployment plugin still run" status_matches "deployment .* running" 1
[[ $FAILED == 0 ]] || { echo "--- groved output"; grep -i "deployment\|ml_inference\|model" "$WORK/groved.out" | tail -n 60; }
finish
