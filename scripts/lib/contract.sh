#!/usr/bin/env bash
# The agent contract shared by every script: logging, exit codes, argument rules, app paths, running as the app user.
# shellcheck disable=SC2034 # current_step is read by fail(); set here and by the scripts
# Sourced (never executed) by install_framework.sh and deploy_app.sh; defines functions and constants only.

# Exit codes: 0 ok, 1 a step failed, 2 bad arguments (the message names the flag and the rule).
readonly EXIT_STEP=1 EXIT_ARGS=2
readonly SCRIPTS_DIR=/opt/pvedeploy/scripts
readonly BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
readonly FRAMEWORKS="django flask fastapi laravel node nextjs static procfile"

current_step="start"

# Progress goes to stdout, one "step: ..." line per step, so the agent's log shows where it is.
log() { printf '%s\n' "$*"; }
step() { current_step=$1; log "step: $1"; }
# A step failure: message on stderr naming the step, exit 1.
fail() { printf 'error: step %s: %s\n' "$current_step" "$*" >&2; exit "$EXIT_STEP"; }
# Bad arguments: message on stderr naming the flag and the rule, exit 2.
bad_arg() { printf 'error: bad argument %s: %s\n' "$1" "$2" >&2; exit "$EXIT_ARGS"; }

# Any command failing under `set -e` still reports the step it broke, and exits 1.
on_err() {
  local rc=$1 line=$2
  printf 'error: step %s: command failed with exit %s (%s line %s)\n' "$current_step" "$rc" "${0##*/}" "$line" >&2
  exit "$EXIT_STEP"
}
trap 'on_err $? $LINENO' ERR

require_root() { [ "$(id -u)" -eq 0 ] || fail "must run as root (the agent uses sudo -n --)"; }

# --- argument rules (each refuses with exit 2, naming the flag) ---
# A flag's value: the next argv element, which must exist.
need_value() { [ "$2" -ge 2 ] || bad_arg "$1" "needs a value"; }

# The rules below are the agent's own (src/core: AppName, CommitSha, PersistentPath, StartCommand), tested over
# the same examples (src/engine/deploy/scripts.rs), so a value the agent accepts never fails here.
# An app name is a DNS label: 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen.
check_app() {
  [[ $1 =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || bad_arg --app "must match ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\$"
}
check_framework() {
  local f
  for f in $FRAMEWORKS; do [ "$1" = "$f" ] && return 0; done
  bad_arg --framework "must be one of: $FRAMEWORKS"
}
check_port() {
  if ! [[ $1 =~ ^[1-9][0-9]{0,4}$ ]] || [ "$1" -gt 65535 ]; then bad_arg --port "must be an integer 1..65535"; fi
}
# IPv4 dotted quad (each part 0..255) or an IPv6 literal without brackets or zone.
check_bind() {
  local ip=$1 part
  if [[ $ip =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]]; then
    for part in "${BASH_REMATCH[@]:1}"; do
      [ "$((10#$part))" -le 255 ] || bad_arg --bind "each IPv4 part must be 0..255"
    done
  elif [[ $ip =~ ^[0-9a-fA-F:]{2,39}$ && $ip == *:*:* ]]; then
    :
  else
    bad_arg --bind "must be an IPv4 address or an IPv6 literal (no brackets)"
  fi
}
check_sha() { [[ $1 =~ ^([0-9a-f]{40}|[0-9a-f]{64})$ ]] || bad_arg --commit "must be 40 or 64 lowercase hex digits"; }
check_release() {
  [[ $1 =~ ^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40}$ ]] || bad_arg --release "must match ^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40}\$"
}
check_keep() { [[ $1 =~ ^[1-9][0-9]{0,3}$ ]] || bad_arg --keep "must be an integer 1..9999"; }
# https://, http:// (local test servers), ssh:// or scp-like user@host:path; nothing else (no ext::, file://, paths).
check_repo() {
  local u=$1
  [ "${#u}" -le 2048 ] || bad_arg --repo "must be at most 2048 characters"
  [[ $u =~ ^(https?|ssh)://[A-Za-z0-9._~%@:+-]+(/[^[:space:][:cntrl:]]*)?$ ||
     $u =~ ^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~/+-][^[:space:][:cntrl:]]*$ ]] ||
    bad_arg --repo "must be an https://, http://, ssh:// or user@host:path URL without spaces or control characters"
}
# curl's CURLOPT_RESOLVE entry HOST:PORT:ADDRESS (an IPv6 address in brackets): the address the agent resolved
# and checked for the repository's host, handed to git as http.curloptResolve so the guest never resolves it.
check_resolve() {
  [[ $1 =~ ^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}:([0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]{2,45}\])$ ]] ||
    bad_arg --resolve "must be HOST:PORT:ADDRESS (an IPv4 address, or an IPv6 one in brackets)"
}
check_version() { # flag value: a runtime version such as 3.11, 18 or 8.2
  [[ $2 =~ ^[0-9]{1,2}(\.[0-9]{1,2})?$ ]] || bad_arg "$1" "must look like 3.11, 18 or 8.2"
}
# A path inside the release that keeps its data across releases: relative, [A-Za-z0-9._-] components,
# no . or .. component, at most 200 characters; a trailing / marks a directory.
check_persist() {
  local p=$1 c
  if [ "${#p}" -gt 200 ] || ! [[ $p =~ ^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?$ ]]; then
    bad_arg --persist "must be a relative path of [A-Za-z0-9._-] components, at most 200 characters"
  fi
  local parts
  IFS=/ read -ra parts <<<"${p%/}"
  for c in "${parts[@]}"; do
    if [ "$c" = . ] || [ "$c" = .. ]; then bad_arg --persist "must not contain . or .. components"; fi
  done
}
check_start_command() {
  if [ -z "$1" ] || [ "${#1}" -gt 2048 ]; then bad_arg --start-command "must be 1..2048 characters"; fi
  [[ $1 != *[$'\r\n']* ]] || bad_arg --start-command "must not contain CR or LF"
}

# --- the layout on the guest ---
app_user() { printf 'app-%s' "$1"; }
app_home() { printf '/srv/%s' "$1"; }

# Runs a command as the app user, in DIR, with a clean, fixed environment (nothing of ours or the caller's
# leaks in). Arguments are passed as argv; nothing is evaluated by a shell.
as_app() { # app dir command...
  local app=$1 dir=$2
  shift 2
  local home
  home=$(app_home "$app")
  runuser -u "$(app_user "$app")" -- env -i -C "$dir" \
    PATH="$BASE_PATH" HOME="$home/shared/home" LANG=C.UTF-8 \
    XDG_CACHE_HOME="$home/shared/cache" PIP_CACHE_DIR="$home/shared/cache/pip" \
    npm_config_cache="$home/shared/cache/npm" npm_config_update_notifier=false \
    COMPOSER_HOME="$home/shared/cache/composer" PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$@"
}

# Like as_app, with the app's environment file loaded literally (run-with-env): for build steps.
as_app_with_env() { # app dir command...
  local app=$1 dir=$2
  shift 2
  as_app "$app" "$dir" "$SCRIPTS_DIR/run-with-env" "$(app_home "$app")/shared/app.env" -- "$@"
}

# Reads KEY from a KEY=VALUE state file we wrote (no sourcing); prints nothing when absent.
state_get() {
  local file=$1 key=$2 line
  [ -f "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    if [[ $line == "$key="* ]]; then printf '%s' "${line#*=}"; return 0; fi
  done <"$file"
}

# Writes a file atomically (temp name in the same directory, then rename) with owner and mode.
write_atomic() { # path owner:group mode  (content on stdin)
  local path=$1 owner=$2 mode=$3 tmp
  tmp=$(mktemp "${path%/*}/.tmp.XXXXXX")
  cat >"$tmp"
  chown "$owner" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
}
