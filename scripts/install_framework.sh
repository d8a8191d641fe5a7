#!/usr/bin/env bash
# Prepares a guest for one app: runtime for its framework, the app user, /srv/NAME layout, firewall port, install record.
#
# Contract (run by the agent as root: sudo -n -- /opt/pvedeploy/scripts/install_framework.sh ...):
#   install_framework.sh --framework F --app NAME --port PORT --bind IP [--python VERSION] [--node VERSION] [--php VERSION]
#     F      django | flask | fastapi | laravel | node | nextjs | static | procfile
#     NAME   a DNS label (check_app)          PORT 1..65535          IP  IPv4 or IPv6 literal
#     --python 3.X (apt's python3.X + venv), --node MAJOR (must equal apt's nodejs), --php 8.X (php8.X-*)
# Installs: git, nginx (every app's front) + the runtime (Python: python3 + venv; Node: apt nodejs + npm from the
# npm registry tarball; Laravel: php-fpm, php-cli + extensions, composer; static: Node with --node only; procfile:
# Python (+ Node with --node)); user app-NAME (system, no login shell, home /srv/NAME); /srv/NAME/{releases,shared};
# `ufw allow PORT/tcp` only when ufw is installed and active; /srv/NAME/shared/install.state (KEY=VALUE).
# Idempotent: a second run finds everything present and calls neither apt nor the network.
# Exit: 0 ok, 1 a step failed (stderr names it), 2 bad arguments (stderr names the flag and the rule).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
set -E
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/contract.sh
source "$here/lib/contract.sh"
# shellcheck source=lib/packages.sh
source "$here/lib/packages.sh"

framework='' app='' port='' bind='' py_version='' node_version='' php_version=''
while [ $# -gt 0 ]; do
  case $1 in
  --framework) need_value "$1" $#; framework=$2; shift 2 ;;
  --app) need_value "$1" $#; app=$2; shift 2 ;;
  --port) need_value "$1" $#; port=$2; shift 2 ;;
  --bind) need_value "$1" $#; bind=$2; shift 2 ;;
  --python) need_value "$1" $#; py_version=$2; shift 2 ;;
  --node) need_value "$1" $#; node_version=$2; shift 2 ;;
  --php) need_value "$1" $#; php_version=$2; shift 2 ;;
  *) bad_arg "$1" "unknown flag (see the contract at the top of install_framework.sh)" ;;
  esac
done
[ -n "$framework" ] || bad_arg --framework "is required"
[ -n "$app" ] || bad_arg --app "is required"
[ -n "$port" ] || bad_arg --port "is required"
[ -n "$bind" ] || bad_arg --bind "is required"
check_framework "$framework"
check_app "$app"
check_port "$port"
check_bind "$bind"
[ -z "$py_version" ] || check_version --python "$py_version"
[ -z "$node_version" ] || check_version --node "$node_version"
[ -z "$php_version" ] || check_version --php "$php_version"
require_root

user=$(app_user "$app")
home=$(app_home "$app")

step "base packages"
apt_install git ca-certificates python3 curl procps iproute2

step "runtime for $framework"
# nginx is every app's front on IP:PORT: releases start beside the serving one and the front switches to them.
apt_install nginx
case $framework in
django | flask | fastapi) install_python "$py_version" ;;
procfile)
  install_python "$py_version"
  [ -z "$node_version" ] || install_node "$node_version"
  ;;
node | nextjs) install_node "$node_version" ;;
laravel) install_php "$php_version" ;;
static) [ -z "$node_version" ] || install_node "$node_version" ;;
esac

if [ "$framework" = laravel ]; then
  step "php-fpm"
  fpm_bin=$(find /usr/sbin -maxdepth 1 -name "php-fpm${php_version}*" -type f | sort -V | tail -n 1)
  [ -n "$fpm_bin" ] || fail "no php-fpm binary in /usr/sbin after installing PHP"
  # Each app runs its own php-fpm master as its own user (its unit); the distribution's shared pool is not used.
  for u in /lib/systemd/system/php*-fpm.service; do
    [ -e "$u" ] || continue
    systemctl disable --now "${u##*/}" >/dev/null 2>&1 || true
  done
fi

step "nginx"
# The packaged default site listens on 0.0.0.0:80; apps get only their own IP:PORT site.
rm -f /etc/nginx/sites-enabled/default
systemctl enable nginx >/dev/null 2>&1 || fail "systemctl enable nginx failed"

step "app user $user"
if ! id -u "$user" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$home" --no-create-home --shell /usr/sbin/nologin "$user"
  log "created user $user"
else
  log "user $user exists"
fi

step "layout $home"
# /srv/NAME and current are root's (the app cannot repoint its release); releases and caches are the app's;
# shared/ is root:app 0750 and holds app.env (root:app 0640), the install record and per-release launch records;
# shared/home is the app's writable HOME at run time.
install -d -o root -g root -m 0755 "$home"
install -d -o "$user" -g "$user" -m 0755 "$home/releases"
install -d -o root -g "$user" -m 0750 "$home/shared"
install -d -o "$user" -g "$user" -m 0700 "$home/shared/cache"
install -d -o "$user" -g "$user" -m 0700 "$home/shared/home"
install -d -o root -g root -m 0755 "$home/shared/launch"
if [ -e "$home/shared/app.env" ]; then chown root:"$user" "$home/shared/app.env" && chmod 0640 "$home/shared/app.env"; fi

step "firewall"
if command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q '^Status: active'; then
  ufw allow "$port/tcp" >/dev/null
  log "ufw: allowed $port/tcp"
else
  log "ufw not installed or not active: nothing to open"
fi

step "install record"
state="$home/shared/install.state"
{
  printf 'framework=%s\n' "$framework"
  printf 'port=%s\n' "$port"
  printf 'bind=%s\n' "$bind"
  printf 'python=%s\n' "$python_bin"
  printf 'node=%s\n' "$(if command -v node >/dev/null 2>&1; then node -p 'process.versions.node'; fi)"
  printf 'npm=%s\n' "$(if [ -x /usr/local/bin/npm ]; then printf '%s' "$NPM_VERSION"; fi)"
  printf 'php_fpm=%s\n' "${fpm_bin:-}"
  printf 'installed_now=%s\n' "${installed_pkgs[*]}"
  printf 'updated_at=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} | write_atomic "$state" root:root 0644
log "done: $framework runtime for $app ready"
