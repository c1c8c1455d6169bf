# shellcheck shell=bash
# Shared by the shadow plugin's end-to-end scripts (sourced first; a script then calls
# shadow_open, then shadow_group or its own group_pki, PORT and group): the group's
# shadow routes, the image profile of message_manager and shadow, groved started until
# both serve, the plugin's counters. The group is the script's $WORK/group.yaml.

SHADOW_TESTS=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")

# shadow_open GROVED GROVECTL GROVE_CERTS TOOL...: the opening of the scripts: GROVED,
# GROVECTL and CERTS_TOOL (absolute), message_manager's broker_test_lib.sh
# (broker_test_init checks openssl, jq, TOOL... and the three) and mm_test_lib.sh.
shadow_open() {
  GROVED=$(readlink -f "$1")
  GROVECTL=$(readlink -f "$2")
  CERTS_TOOL=$(readlink -f "$3")
  shift 3
  # shellcheck source=../../message_manager/broker/tests/broker_test_lib.sh
  source "$SHADOW_TESTS/../../message_manager/broker/tests/broker_test_lib.sh"
  broker_test_init openssl jq "$CERTS_TOOL" "$GROVED" "$GROVECTL" "$@"
  # shellcheck source=../../message_manager/tests/mm_test_lib.sh
  source "$SHADOW_TESTS/../../message_manager/tests/mm_test_lib.sh"
}

# shadow_routes THING [ASKS [HEARS]]: the two subscription lines by which device THING
# asks about the shadows of ASKS (THING by default; + for any thing's) and hears the
# answers about HEARS (ASKS by default).
shadow_routes() {
  local thing=$1 asks=${2:-$1}
  local hears=${3:-$asks}
  echo "  - {id: $thing-shadow, source: \"device:$thing\", subject: \"\$aws/things/$asks/shadow/#\", target: shadow}"
  echo "  - {id: shadow-$thing, source: shadow, subject: \"\$aws/things/$hears/shadow/#\", target: \"device:$thing\"}"
}

# shadow_group NAME THING1 THING2 ROUTES: group_pki THING1 THING2 grove, a free $PORT, and
# $WORK/group.yaml: group NAME with devices THING1 and THING2 and ROUTES (shadow_routes'
# lines) as its subscriptions.
shadow_group() {
  group_pki "$2" "$3" grove
  PORT=$(free_port)
  cat >"$WORK/group.yaml" <<EOF
name: $1
devices: [{thing: $2}, {thing: $3}]
subscriptions:
$4
EOF
}

# shadow_profile SHADOW_CONFIG_LINES [MESSAGE_MANAGER_LINES]: $WORK/profile.yaml (replaced
# at once: a running groved reads it whole) with message_manager (devices connect as
# <thing> or <thing>-*; MESSAGE_MANAGER_LINES more of its config, 6 spaces in) and shadow
# with SHADOW_CONFIG_LINES as its config (6 spaces in).
shadow_profile() {
  cat >"$WORK/profile.yaml.new" <<EOF
kernel:
  log_level: info
  group: $WORK/group.yaml
plugins:
$(mm_profile_entry)
        client_id_patterns: ["<thing>", "<thing>-*"]
${2:+$2
}  - name: shadow
    config:
$1
EOF
  mv "$WORK/profile.yaml.new" "$WORK/profile.yaml"
}

# start_local_groved DEVICES: launch_groved, then waits until message_manager's local link
# is up and the shadow plugin took the group's DEVICES devices; aborts otherwise.
start_local_groved() {
  launch_groved
  status_has "local_link: connected" 150 || abort "message_manager did not come up"
  status_has "devices: $1" 100 || abort "the shadow plugin did not take the group"
}

# ask TOPIC PAYLOAD TOKEN REPLY_TOPIC [WHO [OUT [TRIES]]]: WHO (lamp) publishes once (TRIES
# times for an idempotent warm-up: the first may beat the subscription) and waits for the
# reply carrying TOKEN on REPLY_TOPIC in OUT; prints the reply's payload.
ask() {
  local who=${5:-lamp} out=${6:-$WORK/lamp.out} tries=${7:-1}
  for _ in $(seq 1 "$tries"); do
    pub "$who" "$1" "$2" >/dev/null 2>&1
    for _ in $(seq 1 50); do
      local l
      l=$(grep -F -- "$4 " "$out" 2>/dev/null | grep -F -- "\"clientToken\":\"$3\"" | tail -1)
      if [[ -n "$l" ]]; then l=${l#"$4 "}; echo "${l% *}"; return 0; fi
      sleep 0.1
    done
  done
  return 1
}

# shadow_metric NAME: the shadow plugin's counter NAME (exported for `check bash -c`).
shadow_metric() {
  "$GROVECTL" status --json 2>/dev/null | jq -r --arg n "$1" \
    '.plugins[] | select(.name == "shadow") | .metrics[] | select(.name == $n) | .value'
}
export -f shadow_metric
export GROVECTL
