# shellcheck shell=bash
# Shared by the shadow plugin's end-to-end scripts (sourced after
# ../../message_manager/tests/mm_test_lib.sh and its group_pki and PORT): the image
# profile of message_manager and shadow, groved started until both serve, the plugin's
# counters. The group is the script's $WORK/group.yaml.

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

# shadow_metric NAME: the shadow plugin's counter NAME (exported for `check bash -c`).
shadow_metric() {
  "$GROVECTL" status --json 2>/dev/null | jq -r --arg n "$1" \
    '.plugins[] | select(.name == "shadow") | .metrics[] | select(.name == $n) | .value'
}
export -f shadow_metric
export GROVECTL
