#!/usr/bin/env bash
# Deploys one app release on the guest, one step per call: fetch, deps, build, activate, rollback, prune, status.
#
# Contract (run by the agent as root: sudo -n -- /opt/pvedeploy/scripts/deploy_app.sh STEP ...; full text in README.md):
#   fetch    --app NAME --repo URL --commit SHA --release RELEASE_ID [--submodules]
#   deps     --app NAME --release RELEASE_ID --framework F
#   build    --app NAME --release RELEASE_ID --framework F [--persist PATH]...
#   activate --app NAME --release RELEASE_ID --framework F --port PORT --bind IP [--start-command CMD]
#   rollback --app NAME --release RELEASE_ID
#   prune    --app NAME --keep N
#   status   --app NAME                       → prints current=<release> and active=<systemd state>
# NAME ^[a-z][a-z0-9-]{0,62}$; SHA 40 lowercase hex; RELEASE_ID ^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40}$; URL https://,
# http:// (tests), ssh:// or user@host:path; N 1..9999. Releases live in /srv/NAME/releases/RELEASE_ID; current is a
# symlink switched atomically; a failing deps/build never touches current, and activate puts the previous release
# back when the new one does not answer HTTP (any status) on IP:PORT within 30 s.
# Exit: 0 ok, 1 a step failed (stderr names it), 2 bad arguments (stderr names the flag and the rule).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
set -E
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/contract.sh
source "$here/lib/contract.sh"
# shellcheck source=lib/frameworks.sh
source "$here/lib/frameworks.sh"

readonly START_TIMEOUT=30
readonly GIT_SAFE=(git -c protocol.allow=never -c protocol.https.allow=always -c protocol.http.allow=always
  -c protocol.ssh.allow=always -c core.sshCommand='ssh -o BatchMode=yes' -c core.hooksPath=/dev/null)

[ $# -ge 1 ] || bad_arg STEP "must be one of: fetch deps build activate rollback prune status"
cmd=$1
shift
case $cmd in
fetch | deps | build | activate | rollback | prune | status) ;;
*) bad_arg STEP "must be one of: fetch deps build activate rollback prune status" ;;
esac

app='' repo='' commit='' release='' framework='' port='' bind='' start_command='' keep='' submodules=no
have_start_command=no
persist=()
while [ $# -gt 0 ]; do
  case $1 in
  --app) need_value "$1" $#; app=$2; shift 2 ;;
  --repo) need_value "$1" $#; repo=$2; shift 2 ;;
  --commit) need_value "$1" $#; commit=$2; shift 2 ;;
  --release) need_value "$1" $#; release=$2; shift 2 ;;
  --framework) need_value "$1" $#; framework=$2; shift 2 ;;
  --port) need_value "$1" $#; port=$2; shift 2 ;;
  --bind) need_value "$1" $#; bind=$2; shift 2 ;;
  --start-command) need_value "$1" $#; start_command=$2; have_start_command=yes; shift 2 ;;
  --keep) need_value "$1" $#; keep=$2; shift 2 ;;
  --submodules) submodules=yes; shift ;;
  --persist) need_value "$1" $#; persist+=("$2"); shift 2 ;;
  *) bad_arg "$1" "unknown flag (see the contract at the top of deploy_app.sh)" ;;
  esac
done

# Which flags each step needs and accepts.
required() { local f v; for f in "$@"; do v=${f#--}; v=${v//-/_}; [ -n "${!v}" ] || bad_arg "$f" "is required for $cmd"; done; }
unexpected() { # flag value
  [ -z "$2" ] || [ "$2" = no ] || bad_arg "$1" "is not accepted by $cmd"
}
case $cmd in
fetch) required --app --repo --commit --release ;;
deps | build) required --app --release --framework ;;
activate) required --app --release --framework --port --bind ;;
rollback) required --app --release ;;
prune) required --app --keep ;;
status) required --app ;;
esac
[ "$cmd" = fetch ] || { unexpected --repo "$repo"; unexpected --commit "$commit"; unexpected --submodules "$submodules"; }
[ "$cmd" = activate ] || { unexpected --port "$port"; unexpected --bind "$bind"; unexpected --start-command "$have_start_command"; }
[ "$cmd" = prune ] || unexpected --keep "$keep"
[ "$cmd" = build ] || [ ${#persist[@]} -eq 0 ] || bad_arg --persist "is not accepted by $cmd"
check_app "$app"
[ -z "$repo" ] || check_repo "$repo"
[ -z "$commit" ] || check_sha "$commit"
[ -z "$release" ] || check_release "$release"
[ -z "$framework" ] || check_framework "$framework"
[ -z "$port" ] || check_port "$port"
[ -z "$bind" ] || check_bind "$bind"
[ "$have_start_command" = no ] || check_start_command "$start_command"
[ -z "$keep" ] || check_keep "$keep"
for p in "${persist[@]}"; do check_persist "$p"; done
require_root

home=$(app_home "$app")
user=$(app_user "$app")
unit=$(unit_name "$app")
dest=${release:+$home/releases/$release}
if ! [ -d "$home/releases" ] || ! id -u "$user" >/dev/null 2>&1; then
  current_step=$cmd
  fail "app $app is not installed here: run install_framework.sh first"
fi

need_release() { [ -d "$dest" ] || fail "release $release does not exist in $home/releases"; }
current_release() { local t; t=$(readlink "$home/current" 2>/dev/null || true); printf '%s' "${t##*/}"; }

# --- fetch ---
do_fetch() {
  step "fetch $release"
  if [ -d "$dest" ]; then
    local head
    head=$(as_app "$app" "$dest" git rev-parse HEAD)
    [ "$head" = "$commit" ] || fail "release $release already exists at another commit"
    log "release $release already at $commit"
    return 0
  fi
  local cache="$home/shared/repo.git"
  if [ ! -d "$cache" ]; then
    install -d -o "$user" -g "$user" -m 0700 "$cache"
    as_app "$app" "$cache" git init --quiet --bare .
  fi
  if as_app "$app" "$cache" git cat-file -e "$commit^{commit}" 2>/dev/null; then
    log "commit already in the cache"
  else
    log "fetching $commit into the cache"
    # An exact commit first (servers that allow it send only what is needed), else every branch and tag.
    if ! as_app "$app" "$cache" env GIT_TERMINAL_PROMPT=0 "${GIT_SAFE[@]}" fetch --quiet --no-tags -- "$repo" "$commit" 2>/dev/null; then
      as_app "$app" "$cache" env GIT_TERMINAL_PROMPT=0 "${GIT_SAFE[@]}" fetch --quiet --prune -- "$repo" \
        '+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*' || fail "git fetch from the repository failed"
    fi
    as_app "$app" "$cache" git cat-file -e "$commit^{commit}" 2>/dev/null || fail "commit $commit is not in the repository"
  fi
  # Keeps the commit in the cache whatever happens to the branches.
  as_app "$app" "$cache" git update-ref "refs/pvedeploy/$commit" "$commit"
  local tmp="$home/releases/.tmp-$release"
  rm -rf -- "$tmp"
  # A local clone of our own cache (hard links): the file protocol is allowed for this one path only.
  # (Its branches may be empty when only refs/pvedeploy/* exist: git's "empty repository" warning is noise here.)
  as_app "$app" "$home/releases" "${GIT_SAFE[@]}" -c protocol.file.allow=always clone --quiet --no-checkout -- "$cache" "$tmp" \
    2> >(grep -v 'cloned an empty repository' >&2 || true)
  as_app "$app" "$tmp" git -c advice.detachedHead=false checkout --quiet --detach "$commit"
  as_app "$app" "$tmp" git remote set-url origin -- "$repo"
  if [ "$submodules" = yes ]; then
    log "updating submodules"
    as_app "$app" "$tmp" env GIT_TERMINAL_PROMPT=0 "${GIT_SAFE[@]}" submodule update --init --recursive --quiet ||
      fail "git submodule update failed"
  fi
  mv -T -- "$tmp" "$dest"
  log "fetched $commit into $dest"
}

# --- activate / rollback ---
launch_dir() { printf '%s/shared/launch/%s' "$home" "$1"; }

# The systemd unit: runs app-start as the app user in /srv/NAME/current; hardening that leaves the app working.
write_unit() { # framework
  local fw=$1 unit_extra=''
  if [ "$fw" = laravel ]; then
    # php-fpm's socket lives in the runtime dir, owned app:www-data 0660: only the app and nginx (www-data) may
    # connect. (systemd re-chowns a RuntimeDirectory to User:Group before ExecStart, so the group is set on the
    # socket by php-fpm itself, which may do so because the master is in www-data's group.)
    unit_extra="RuntimeDirectory=pvedeploy-app-$app
RuntimeDirectoryMode=0755
SupplementaryGroups=www-data"
  fi
  write_atomic "/etc/systemd/system/$unit" root:root 0644 <<UNIT
# Written by pvedeploy deploy_app.sh activate; rewritten on every activate/rollback.
[Unit]
Description=pvedeploy app $app
After=network.target

[Service]
Type=simple
User=$user
Group=$user
WorkingDirectory=$home/current
Environment=HOME=$home/shared/home
Environment=PATH=$home/current/.venv/bin:$home/current/node_modules/.bin:/usr/local/bin:/usr/bin:/bin
Environment=PYTHONUNBUFFERED=1
ExecStart=$SCRIPTS_DIR/app-start $app
Restart=on-failure
RestartSec=2
KillMode=mixed
TimeoutStopSec=20
UMask=0027
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictRealtime=yes
$unit_extra

[Install]
WantedBy=multi-user.target
UNIT
}

# nginx site for laravel/static, listening on IP:PORT only, serving the current release.
write_nginx_site() { # framework bind port webroot
  local fw=$1 listen root deny
  listen=$(hostport "$2" "$3")
  root="$home/current/$4"
  root=${root%/.}
  deny='location ~ /\.(?!well-known) { deny all; }'
  local body
  if [ "$fw" = laravel ]; then
    body="    index index.php index.html;
    location / { try_files \$uri \$uri/ /index.php?\$query_string; }
    location ~ \\.php\$ {
        include snippets/fastcgi-php.conf;
        fastcgi_param SCRIPT_FILENAME \$realpath_root\$fastcgi_script_name;
        fastcgi_param DOCUMENT_ROOT \$realpath_root;
        fastcgi_pass unix:/run/pvedeploy-app-$app/php-fpm.sock;
    }"
  else
    body="    index index.html index.htm;
    location / { try_files \$uri \$uri/ =404; }"
  fi
  write_atomic "/etc/nginx/sites-available/pvedeploy-$app.conf" root:root 0644 <<SITE
# Written by pvedeploy deploy_app.sh activate.
server {
    listen $listen;
    server_name _;
    root $root;
    $deny
$body
}
SITE
  ln -sfn "/etc/nginx/sites-available/pvedeploy-$app.conf" "/etc/nginx/sites-enabled/pvedeploy-$app.conf"
  nginx -t -q 2>&1 || fail "nginx rejected the site configuration"
}

write_fpm_conf() {
  install -d -o "$user" -g "$user" -m 0750 "$home/shared/logs"
  write_atomic "$home/shared/php-fpm.conf" root:root 0644 <<FPM
; Written by pvedeploy deploy_app.sh activate: one php-fpm master per app, running as $user.
[global]
pid = /run/pvedeploy-app-$app/php-fpm.pid
error_log = $home/shared/logs/php-fpm.log
daemonize = no

[app]
listen = /run/pvedeploy-app-$app/php-fpm.sock
listen.group = www-data
listen.mode = 0660
pm = dynamic
pm.max_children = 5
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3
; Workers keep the environment app-start loaded from app.env (values stay literal).
clear_env = no
catch_workers_output = yes
FPM
}

# True once IP:PORT answers an HTTP request with any status (a listening socket alone is not enough: gunicorn's
# master listens before its workers have imported the app).
answering() { # bind port
  local url code
  if [[ $1 == *:* ]]; then url="http://[$1]:$2/"; else url="http://$1:$2/"; fi
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -- "$url" 2>/dev/null || true)
  [ -n "$code" ] && [ "$code" != 000 ]
}

# Points current at release R, (re)starts what serves it, and waits until IP:PORT answers.
switch_to() { # release
  local r=$1 ld fw b p webroot prev restarts0=''
  ld=$(launch_dir "$r")
  [ -f "$ld/framework" ] || fail "release $r was never activated (no launch record)"
  fw=$(cat "$ld/framework") b=$(cat "$ld/bind") p=$(cat "$ld/port") webroot=$(cat "$ld/webroot")
  case $fw in
  static) write_nginx_site "$fw" "$b" "$p" "$webroot" ;;
  laravel) write_fpm_conf; write_unit "$fw"; write_nginx_site "$fw" "$b" "$p" public ;;
  *) write_unit "$fw" ;;
  esac
  prev=$(current_release)
  if [ -n "$prev" ] && [ "$prev" != "$r" ]; then
    printf '%s\n' "$prev" | write_atomic "$home/shared/previous" root:root 0644
  fi
  ln -sfn "releases/$r" "$home/.current.tmp"
  mv -T "$home/.current.tmp" "$home/current"
  log "current -> releases/$r"
  systemctl daemon-reload
  if [ "$fw" = static ]; then
    # No process of its own: nginx serves the files; a stale unit from another framework is stopped.
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  else
    systemctl enable "$unit" >/dev/null 2>&1
    # stop, then start: stopping cancels an automatic restart still pending from an earlier crash, so the restart
    # counter only grows from here if this start crashes (the counter is not reliably zeroed by a manual start).
    systemctl stop "$unit"
    systemctl start "$unit"
    restarts0=$(systemctl show -p NRestarts --value "$unit")
  fi
  if [ "$fw" = static ] || [ "$fw" = laravel ]; then
    if systemctl is-active --quiet nginx; then systemctl reload nginx; else systemctl start nginx; fi
  fi
  local i
  for ((i = 0; i < START_TIMEOUT * 4; i++)); do
    if answering "$b" "$p"; then
      # Still up a moment later (a crash right after the first answer counts as not started).
      sleep 1
      if [ "$fw" = static ] || systemctl is-active --quiet "$unit"; then
        log "answering HTTP on $(hostport "$b" "$p")"
        return 0
      fi
    fi
    # A process that exited (and was restarted by systemd, or gave up) before answering has failed to start.
    if [ "$fw" != static ] && { [ "$(systemctl is-active "$unit" || true)" = failed ] ||
      [ "$(systemctl show -p NRestarts --value "$unit")" != "$restarts0" ]; }; then
      log "the app exited before answering HTTP"
      break
    fi
    sleep 0.25
  done
  journalctl -u "$unit" -n 20 --no-pager -q >&2 2>/dev/null || true
  return 1
}

do_activate() {
  step "activate $release"
  need_release
  local ld
  ld=$(launch_dir "$release")
  compute_start "$bind" "$port"
  install -d -o root -g root -m 0755 "$ld"
  printf '%s\n' "$framework" | write_atomic "$ld/framework" root:root 0644
  printf '%s\n' "$bind" | write_atomic "$ld/bind" root:root 0644
  printf '%s\n' "$port" | write_atomic "$ld/port" root:root 0644
  static_webroot | write_atomic "$ld/webroot" root:root 0644
  # The start command as NUL-separated argv: app-start execs it as is; no shell or systemd parsing on the way.
  { if [ ${#start_argv[@]} -gt 0 ]; then printf '%s\0' "${start_argv[@]}"; fi; } | write_atomic "$ld/argv" root:root 0644
  log "start: ${start_argv[0]:-nginx} (${#start_argv[@]} arguments)"
  local prev
  prev=$(current_release)
  if switch_to "$release"; then
    log "done: $app serving release $release"
    return 0
  fi
  if [ -n "$prev" ] && [ "$prev" != "$release" ]; then
    step "restore $prev"
    switch_to "$prev" || fail "release $release did not start and the previous release $prev did not come back either"
    printf '%s\n' "$release" | write_atomic "$home/shared/previous" root:root 0644
    current_step="activate $release" # fail below names the step that failed, not the restore
    fail "release $release did not answer HTTP on $(hostport "$bind" "$port") (it exited, or gave no answer within ${START_TIMEOUT}s); previous release $prev is serving again"
  fi
  fail "release $release did not answer HTTP on $(hostport "$bind" "$port") (it exited, or gave no answer within ${START_TIMEOUT}s)"
}

do_rollback() {
  step "rollback to $release"
  need_release
  switch_to "$release" || fail "release $release did not answer HTTP within ${START_TIMEOUT}s"
  log "done: $app serving release $release"
}

# --- prune / status ---
do_prune() {
  step "prune (keep $keep)"
  local cur all=() r n=0
  cur=$(current_release)
  mapfile -t all < <(find "$home/releases" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | grep -E '^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40}$' | sort -r)
  for r in "${all[@]}"; do
    n=$((n + 1))
    if [ "$n" -le "$keep" ] || [ "$r" = "$cur" ]; then continue; fi
    rm -rf -- "${home:?}/releases/$r" "$(launch_dir "$r")"
    log "removed release $r"
  done
  find "$home/releases" -mindepth 1 -maxdepth 1 -name '.tmp-*' -mmin +60 -exec rm -rf -- {} +
  # Shared venvs and node_modules no kept release links to any more.
  local v used
  used=$(find "$home/releases" -mindepth 2 -maxdepth 2 \( -name .venv -o -name node_modules \) -type l -exec readlink -- {} \;)
  for v in "$home"/shared/cache/venvs/*; do
    [ -d "$v" ] || continue
    if ! grep -qxF -- "$v" <<<"$used"; then rm -rf -- "$v"; log "removed the unused venv ${v##*/}"; fi
  done
  for v in "$home"/shared/cache/node/*; do
    [ -d "$v" ] || continue
    if ! grep -qxF -- "$v/node_modules" <<<"$used"; then rm -rf -- "$v"; log "removed the unused node_modules ${v##*/}"; fi
  done
  log "done: $((n > keep ? keep : n)) newest releases kept${cur:+, current $cur}"
}

# Each --persist PATH of the release becomes a link into /srv/NAME/shared/data/PATH, which outlives releases
# (and rollbacks): the first release that has PATH seeds it; later releases' copies are dropped. A PATH with a
# trailing / that no release has is created as an empty directory. Runs before the build (migrations see it).
link_persistent() {
  local p dir target rel user
  user=$(app_user "$app")
  install -d -o "$user" -g "$user" -m 0750 "$home/shared/data"
  for p in "${persist[@]}"; do
    dir=no
    case $p in */) dir=yes; p=${p%/} ;; esac
    target="$home/shared/data/$p"
    rel="$dest/$p"
    if [ -L "$rel" ]; then continue; fi
    as_app "$app" "$dest" mkdir -p -- "$(dirname -- "$target")" "$(dirname -- "$rel")"
    if [ -e "$rel" ]; then
      if [ -e "$target" ]; then
        as_app "$app" "$dest" rm -rf -- "$rel"
      else
        as_app "$app" "$dest" mv -- "$rel" "$target"
        log "persistent $p: seeded from this release"
      fi
    elif [ "$dir" = yes ] && [ ! -e "$target" ]; then
      as_app "$app" "$dest" mkdir -p -- "$target"
    fi
    as_app "$app" "$dest" ln -s -- "$target" "$rel"
    log "persistent $p -> shared/data/$p"
  done
}

do_status() {
  local cur state fw=''
  cur=$(current_release)
  [ -z "$cur" ] || fw=$(cat "$(launch_dir "$cur")/framework" 2>/dev/null || true)
  if [ "$fw" = static ]; then state=$(systemctl is-active nginx 2>/dev/null || true)
  else state=$(systemctl is-active "$unit" 2>/dev/null || true); fi
  printf 'current=%s\n' "$cur"
  printf 'active=%s\n' "${state:-unknown}"
}

case $cmd in
fetch) do_fetch ;;
deps) step "deps $release ($framework)"; need_release; run_deps; log "done: dependencies of $release" ;;
build) step "build $release ($framework)"; need_release; link_persistent; run_build; log "done: build of $release" ;;
activate) do_activate ;;
rollback) do_rollback ;;
prune) do_prune ;;
status) do_status ;;
esac
