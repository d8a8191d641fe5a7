#!/usr/bin/env bash
# Deploys one app release on the guest, one step per call: fetch, deps, build, stage, promote, discard, prune, status.
#
# Contract (run by the agent as root: sudo -n -- /opt/pvedeploy/scripts/deploy_app.sh STEP ...; full text in README.md):
#   fetch    --app NAME --repo URL --commit SHA --release RELEASE_ID [--resolve HOST:PORT:ADDRESS] [--submodules]
#            --resolve: git connects to ADDRESS for HOST:PORT (http.curloptResolve) and follows no redirect
#   deps     --app NAME --release RELEASE_ID --framework F
#   build    --app NAME --release RELEASE_ID --framework F [--persist PATH]...
#   stage    --app NAME --release RELEASE_ID [--framework F --port PORT --bind IP [--start-command CMD]] [--start-timeout S]
#            → prints "candidate slot=a|b port=P" once the release answers HTTP on IP:P
#   promote  --app NAME --release RELEASE_ID    the front (nginx on IP:PORT) serves the staged release; the old one stops
#   discard  --app NAME --release RELEASE_ID    stops a staged release that is not promoted
#   prune    --app NAME --keep N
#   status   --app NAME                       → prints current=<release> and active=<systemd state>
# NAME ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$; SHA 40 or 64 lowercase hex; RELEASE_ID ^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40}$; URL https://,
# http:// (tests), ssh:// or user@host:path; N 1..9999; S 1..3600 (default 30). Releases live in
# /srv/NAME/releases/RELEASE_ID; a new release starts beside the serving one (two slots) and the front switches to it
# only after it answers: a failing deps/build/stage never touches what serves.
# Exit: 0 ok, 1 a step failed (stderr names it), 2 bad arguments (stderr names the flag and the rule).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
set -E
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/contract.sh
source "$here/lib/contract.sh"
# shellcheck source=lib/frameworks.sh
source "$here/lib/frameworks.sh"

readonly GIT_SAFE=(git -c protocol.allow=never -c protocol.https.allow=always -c protocol.http.allow=always
  -c protocol.ssh.allow=always -c core.sshCommand='ssh -o BatchMode=yes' -c core.hooksPath=/dev/null)

readonly STEPS="fetch deps build stage promote discard prune status"
[ $# -ge 1 ] || bad_arg STEP "must be one of: $STEPS"
cmd=$1
shift
case $cmd in
fetch | deps | build | stage | promote | discard | prune | status) ;;
*) bad_arg STEP "must be one of: $STEPS" ;;
esac

app='' repo='' commit='' release='' resolve='' framework='' port='' bind='' start_command='' keep='' submodules=no start_timeout=''
slot=''
have_start_command=no
persist=()
while [ $# -gt 0 ]; do
  case $1 in
  --app) need_value "$1" $#; app=$2; shift 2 ;;
  --repo) need_value "$1" $#; repo=$2; shift 2 ;;
  --commit) need_value "$1" $#; commit=$2; shift 2 ;;
  --release) need_value "$1" $#; release=$2; shift 2 ;;
  --resolve) need_value "$1" $#; resolve=$2; shift 2 ;;
  --framework) need_value "$1" $#; framework=$2; shift 2 ;;
  --port) need_value "$1" $#; port=$2; shift 2 ;;
  --bind) need_value "$1" $#; bind=$2; shift 2 ;;
  --start-command) need_value "$1" $#; start_command=$2; have_start_command=yes; shift 2 ;;
  --keep) need_value "$1" $#; keep=$2; shift 2 ;;
  --start-timeout) need_value "$1" $#; start_timeout=$2; shift 2 ;;
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
stage)
  required --app --release
  if [ -n "$framework$port$bind" ] || [ "$have_start_command" = yes ]; then required --framework --port --bind; fi
  ;;
promote | discard) required --app --release ;;
prune) required --app --keep ;;
status) required --app ;;
esac
[ "$cmd" = fetch ] || { unexpected --repo "$repo"; unexpected --commit "$commit"; unexpected --submodules "$submodules"; unexpected --resolve "$resolve"; }
[ "$cmd" = stage ] || { unexpected --port "$port"; unexpected --bind "$bind"; unexpected --start-command "$have_start_command"; unexpected --start-timeout "$start_timeout"; }
case $cmd in promote | discard) unexpected --framework "$framework" ;; esac
[ "$cmd" = prune ] || unexpected --keep "$keep"
[ "$cmd" = build ] || [ ${#persist[@]} -eq 0 ] || bad_arg --persist "is not accepted by $cmd"
check_app "$app"
[ -z "$repo" ] || check_repo "$repo"
[ -z "$commit" ] || check_sha "$commit"
[ -z "$resolve" ] || check_resolve "$resolve"
[ -z "$release" ] || check_release "$release"
[ -z "$framework" ] || check_framework "$framework"
[ -z "$port" ] || check_port "$port"
[ -z "$bind" ] || check_bind "$bind"
[ "$have_start_command" = no ] || check_start_command "$start_command"
[ -z "$keep" ] || check_keep "$keep"
if [ -n "$start_timeout" ]; then
  if ! [[ $start_timeout =~ ^[1-9][0-9]{0,3}$ ]] || [ "$start_timeout" -gt 3600 ]; then bad_arg --start-timeout "must be an integer 1..3600 (seconds)"; fi
else
  start_timeout=30
fi
for p in "${persist[@]}"; do check_persist "$p"; done
require_root

home=$(app_home "$app")
user=$(app_user "$app")
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
    log "fetching $commit into the cache${resolve:+, connecting only to the address the agent checked ($resolve)}"
    # The address the agent resolved and checked for the repository's host: git connects there and nowhere else
    # (no second lookup here that DNS could answer differently, no redirect elsewhere).
    local pinned=()
    [ -z "$resolve" ] || pinned=(-c "http.curloptResolve=$resolve" -c http.followRedirects=false)
    # An exact commit first (servers that allow it send only what is needed), else every branch and tag.
    if ! as_app "$app" "$cache" env GIT_TERMINAL_PROMPT=0 "${GIT_SAFE[@]}" "${pinned[@]}" fetch --quiet --no-tags -- "$repo" "$commit" 2>/dev/null; then
      as_app "$app" "$cache" env GIT_TERMINAL_PROMPT=0 "${GIT_SAFE[@]}" "${pinned[@]}" fetch --quiet --prune -- "$repo" \
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

# --- stage / promote / discard: a release starts beside the serving one and takes over only once it answers ---
# Two slots, a and b. The front (nginx on IP:PORT, the app's public address) serves the live slot; a new release is
# staged in the other slot on an internal port of the same address, checked there, then the front is pointed at it
# with a graceful reload, and the old slot is stopped only once no nginx worker of the old configuration is left.
launch_dir() { printf '%s/shared/launch/%s' "$home" "$1"; }
slots_dir() { printf '%s/shared/slots' "$home"; }
live_slot() { cat "$(slots_dir)/live" 2>/dev/null || true; }
slot_get() { cat "$(slots_dir)/$1/$2" 2>/dev/null || true; } # slot key
other_slot() { if [ "$1" = a ]; then printf b; else printf a; fi; }
slot_unit() { printf 'pvedeploy-app-%s@%s.service' "$app" "$1"; }
legacy_unit() { printf 'pvedeploy-app-%s.service' "$app"; }
front_site() { printf '/etc/nginx/sites-available/pvedeploy-%s.conf' "$app"; }
slot_site() { printf '/etc/nginx/sites-available/pvedeploy-%s-%s.conf' "$app" "$1"; }
enable_site() { ln -sfn "$1" "/etc/nginx/sites-enabled/${1##*/}"; }
disable_site() { rm -f -- "/etc/nginx/sites-enabled/${1##*/}" "$1"; }

# The systemd template unit: instance SLOT runs app-start NAME SLOT as the app user, in the slot's release.
write_unit() { # framework
  local fw=$1 unit_extra=''
  if [ "$fw" = laravel ]; then
    # php-fpm's socket lives in the slot's runtime dir, owned app:www-data 0660: only the app and nginx (www-data)
    # may connect. (systemd re-chowns a RuntimeDirectory to User:Group before ExecStart, so the group is set on
    # the socket by php-fpm itself, which may do so because the master is in www-data's group.)
    unit_extra="RuntimeDirectory=pvedeploy-app-$app-%i
RuntimeDirectoryMode=0755
SupplementaryGroups=www-data"
  fi
  write_atomic "/etc/systemd/system/pvedeploy-app-$app@.service" root:root 0644 <<UNIT
# Written by pvedeploy deploy_app.sh stage; instance a or b is one slot (see /srv/$app/shared/slots).
[Unit]
Description=pvedeploy app $app (slot %i)
After=network.target

[Service]
Type=simple
User=$user
Group=$user
WorkingDirectory=$home
Environment=HOME=$home/shared/home
Environment=PYTHONUNBUFFERED=1
ExecStart=$SCRIPTS_DIR/app-start $app %i
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

write_fpm_conf() { # slot
  local s=$1
  install -d -o "$user" -g "$user" -m 0750 "$home/shared/logs"
  write_atomic "$home/shared/php-fpm-$s.conf" root:root 0644 <<FPM
; Written by pvedeploy deploy_app.sh stage: one php-fpm master per app and slot, running as $user.
[global]
pid = /run/pvedeploy-app-$app-$s/php-fpm.pid
error_log = $home/shared/logs/php-fpm.log
daemonize = no

[app]
listen = /run/pvedeploy-app-$app-$s/php-fpm.sock
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

# An nginx server on IP:PORT for release R in slot S: files (static), PHP through the slot's php-fpm (laravel),
# or a proxy to the slot's internal port (every other framework). The Host header and client address pass through.
site_body() { # framework bind port release slot
  local fw=$1 listen root slot_port
  listen=$(hostport "$2" "$3")
  case $fw in
  static)
    root="$home/releases/$4/$(cat "$(launch_dir "$4")/webroot")"
    root=${root%/.}
    cat <<SITE
# Written by pvedeploy deploy_app.sh: release $4 (slot $5).
server {
    listen $listen;
    server_name _;
    root $root;
    location ~ /\.(?!well-known) { deny all; }
    index index.html index.htm;
    location / { try_files \$uri \$uri/ =404; }
}
SITE
    ;;
  laravel)
    cat <<SITE
# Written by pvedeploy deploy_app.sh: release $4 (slot $5).
server {
    listen $listen;
    server_name _;
    root $home/releases/$4/public;
    location ~ /\.(?!well-known) { deny all; }
    index index.php index.html;
    location / { try_files \$uri \$uri/ /index.php?\$query_string; }
    location ~ \\.php\$ {
        include snippets/fastcgi-php.conf;
        fastcgi_param SCRIPT_FILENAME \$realpath_root\$fastcgi_script_name;
        fastcgi_param DOCUMENT_ROOT \$realpath_root;
        fastcgi_pass unix:/run/pvedeploy-app-$app-$5/php-fpm.sock;
    }
}
SITE
    ;;
  *)
    slot_port=$(slot_get "$5" port)
    cat <<SITE
# Written by pvedeploy deploy_app.sh: release $4 (slot $5, port $slot_port).
server {
    listen $listen;
    server_name _;
    # The app decides what it accepts; nginx neither caps nor buffers bodies and streamed answers.
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / {
        proxy_pass http://$(hostport "$2" "$slot_port");
        proxy_http_version 1.1;
        proxy_set_header Host \$http_host;
        proxy_set_header X-Real-IP \$remote_addr;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header Upgrade \$http_upgrade;
        proxy_set_header Connection \$pvedeploy_connection;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
    }
}
SITE
    ;;
  esac
}

# nginx reloaded gracefully: returns once every worker of the old configuration has finished its requests and
# exited (at most 30 s), so nothing the old configuration pointed at is still in use afterwards.
reload_nginx() {
  if ! systemctl is-active --quiet nginx; then
    systemctl start nginx || fail "nginx did not start"
    return 0
  fi
  local master old=() i pid alive
  master=$(cat /run/nginx.pid 2>/dev/null || true)
  [ -z "$master" ] || mapfile -t old < <(pgrep -P "$master" || true)
  systemctl reload nginx || fail "nginx reload failed"
  for ((i = 0; i < 300; i++)); do
    alive=0
    for pid in "${old[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive=1; break; fi; done
    [ "$alive" = 1 ] || return 0
    sleep 0.1
  done
  log "nginx workers of the old configuration still busy after 30 s; going on"
}

# The nginx map the proxy sites use to pass WebSocket upgrades through (once per guest).
ensure_nginx_upgrade_map() {
  local f=/etc/nginx/conf.d/pvedeploy-upgrade.conf
  [ -f "$f" ] && return 0
  write_atomic "$f" root:root 0644 <<'MAP'
# Written by pvedeploy: "Connection: upgrade" only for requests asking to upgrade (WebSockets).
map $http_upgrade $pvedeploy_connection { default upgrade; '' ''; }
MAP
}

# The HTTP status IP:PORT answers for PATH with (000 when there is no answer within MAX s, default 5).
http_code() { # bind port path [max]
  local url
  if [[ $1 == *:* ]]; then url="http://[$1]:$2$3"; else url="http://$1:$2$3"; fi
  curl -s -o /dev/null -w '%{http_code}' --max-time "${4:-5}" -- "$url" 2>/dev/null || true
}
answering() { local c; c=$(http_code "$1" "$2" / "${3:-5}"); [ -n "$c" ] && [ "$c" != 000 ]; }

# A free TCP port for a slot: from a per-app starting point in 30000..59999, skipping any port something listens on
# (on any address) and the other slot's.
free_port() { # avoid
  local start p i
  start=$(( $(printf '%s' "$app" | cksum | cut -d' ' -f1) % 30000 ))
  for ((i = 0; i < 200; i++)); do
    p=$((30000 + (start + i * 7919) % 30000))
    [ "$p" != "$1" ] || continue
    [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] || continue
    printf '%s' "$p"
    return 0
  done
  fail "no free port for the new release in 30000..59999"
}

# The release's launch record: how it starts, whatever slot it lands in.
write_launch_record() {
  local ld
  ld=$(launch_dir "$release")
  install -d -o root -g root -m 0755 "$ld"
  printf '%s\n' "$framework" | write_atomic "$ld/framework" root:root 0644
  printf '%s\n' "$bind" | write_atomic "$ld/bind" root:root 0644
  printf '%s\n' "$port" | write_atomic "$ld/port" root:root 0644
  static_webroot | write_atomic "$ld/webroot" root:root 0644
  if [ "$have_start_command" = yes ]; then
    printf '%s' "$start_command" | write_atomic "$ld/start_command" root:root 0644
  else
    rm -f -- "$ld/start_command"
  fi
}

# Stops a slot that does not serve: its unit, its nginx site; its record goes. A release that never served is
# killed outright (an app stuck at import ignores SIGTERM until systemd's stop timeout); one that served stops
# gracefully.
clear_slot() { # slot [kill]
  local s=$1 site
  [ "$s" != "$(live_slot)" ] || fail "slot $s serves the live release; not clearing it"
  if [ "${2:-}" = kill ]; then systemctl kill --signal=SIGKILL "$(slot_unit "$s")" >/dev/null 2>&1 || true; fi
  systemctl disable --now "$(slot_unit "$s")" >/dev/null 2>&1 || true
  systemctl reset-failed "$(slot_unit "$s")" >/dev/null 2>&1 || true
  site=$(slot_site "$s")
  if [ -e "$site" ]; then
    disable_site "$site"
    if systemctl is-active --quiet nginx; then reload_nginx; fi
  fi
  rm -rf -- "${home:?}/shared/slots/$s"
}

# Starts release R in the slot that does not serve and waits (at most --start-timeout s in all) until it answers
# HTTP with any status on its internal port; prints "candidate slot=S port=P". A release that exits or does not
# answer in time is stopped again and the step fails: the live release is never touched.
do_stage() {
  step "stage $release"
  need_release
  if [ -n "$framework" ]; then
    write_launch_record
  else
    [ -f "$(launch_dir "$release")/framework" ] || fail "release $release was never staged before: --framework, --port and --bind are required"
    framework=$(cat "$(launch_dir "$release")/framework") bind=$(cat "$(launch_dir "$release")/bind")
    port=$(cat "$(launch_dir "$release")/port")
    if [ -f "$(launch_dir "$release")/start_command" ]; then
      start_command=$(cat "$(launch_dir "$release")/start_command") have_start_command=yes
    fi
  fi
  local live s sp deadline ld
  ld=$(launch_dir "$release")
  live=$(live_slot)
  s=$(other_slot "${live:-b}")
  clear_slot "$s" kill
  sp=$(free_port "$(slot_get "$live" port)")
  install -d -o root -g root -m 0755 "$(slots_dir)" "$(slots_dir)/$s"
  printf '%s\n' "$sp" | write_atomic "$(slots_dir)/$s/port" root:root 0644
  slot=$s
  compute_start "$bind" "$sp"
  { if [ ${#start_argv[@]} -gt 0 ]; then printf '%s\0' "${start_argv[@]}"; fi; } | write_atomic "$(slots_dir)/$s/argv" root:root 0644
  printf '%s\n' "$bind" | write_atomic "$(slots_dir)/$s/bind" root:root 0644
  printf '%s\n' "$release" | write_atomic "$(slots_dir)/$s/release" root:root 0644
  log "slot $s on $(hostport "$bind" "$sp"): ${start_argv[0]:-nginx} (${#start_argv[@]} arguments)"
  if command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q '^Status: active'; then ufw allow "$sp/tcp" >/dev/null; fi
  deadline=$((SECONDS + start_timeout))
  if [ "$framework" = static ] || [ "$framework" = laravel ]; then
    ensure_nginx_upgrade_map
    site_body "$framework" "$bind" "$sp" "$release" "$s" | write_atomic "$(slot_site "$s")" root:root 0644
    enable_site "$(slot_site "$s")"
    nginx -t -q 2>&1 || { disable_site "$(slot_site "$s")"; fail "nginx rejected the site configuration"; }
  fi
  local restarts0=''
  if [ "$framework" != static ]; then
    [ "$framework" != laravel ] || write_fpm_conf "$s"
    write_unit "$framework"
    systemctl daemon-reload
    systemctl start "$(slot_unit "$s")"
    restarts0=$(systemctl show -p NRestarts --value "$(slot_unit "$s")")
  fi
  if [ "$framework" = static ] || [ "$framework" = laravel ]; then reload_nginx; fi
  local left
  while [ "$SECONDS" -lt "$deadline" ]; do
    left=$((deadline - SECONDS))
    if answering "$bind" "$sp" "$((left < 5 ? left : 5))"; then
      # Still up a moment later (a crash right after the first answer counts as not started).
      sleep 0.5
      if [ "$framework" = static ] || systemctl is-active --quiet "$(slot_unit "$s")"; then
        log "release $release answers HTTP on $(hostport "$bind" "$sp")"
        printf 'candidate slot=%s port=%s\n' "$s" "$sp"
        return 0
      fi
    fi
    # A process that exited (and was restarted by systemd, or gave up) before answering has failed to start.
    if [ "$framework" != static ] && { [ "$(systemctl is-active "$(slot_unit "$s")" || true)" = failed ] ||
      [ "$(systemctl show -p NRestarts --value "$(slot_unit "$s")")" != "$restarts0" ]; }; then
      log "the app exited before answering HTTP"
      break
    fi
    sleep 0.25
  done
  [ "$framework" = static ] || journalctl -u "$(slot_unit "$s")" -n 20 --no-pager -q >&2 2>/dev/null || true
  clear_slot "$s" kill
  fail "release $release did not answer HTTP on its port (it exited, or gave no answer within ${start_timeout}s); the serving release was not touched"
}

# Points the front at the staged release R, checks the front answers through it, records it as current and live,
# then stops the release it replaced. If the front does not answer, the old front is put back and the step fails.
do_promote() {
  step "promote $release"
  local live s fw b p front prev code
  live=$(live_slot)
  s=$(other_slot "${live:-b}")
  [ "$(slot_get "$s" release)" = "$release" ] || fail "release $release is not staged (stage it first)"
  fw=$(cat "$(launch_dir "$release")/framework") b=$(cat "$(launch_dir "$release")/bind") p=$(cat "$(launch_dir "$release")/port")
  if [ "$fw" != static ]; then
    systemctl is-active --quiet "$(slot_unit "$s")" || fail "release $release stopped running since it was staged"
  fi
  ensure_nginx_upgrade_map
  front=$(front_site)
  rm -f -- "$front.prev"
  [ ! -e "$front" ] || cp -p -- "$front" "$front.prev"
  site_body "$fw" "$b" "$p" "$release" "$s" | write_atomic "$front" root:root 0644
  enable_site "$front"
  if ! nginx -t -q 2>&1; then
    if [ -e "$front.prev" ]; then mv -f -- "$front.prev" "$front"; else disable_site "$front"; fi
    fail "nginx rejected the front configuration"
  fi
  # An app deployed before slots existed listens on IP:PORT itself: it gives the address up to the front here.
  if [ -e "/etc/systemd/system/$(legacy_unit)" ]; then
    log "handing $(hostport "$b" "$p") from $(legacy_unit) to the front"
    systemctl disable --now "$(legacy_unit)" >/dev/null 2>&1 || true
    rm -f -- "/etc/systemd/system/$(legacy_unit)"
    systemctl daemon-reload
  fi
  reload_nginx
  code=''
  local i
  for ((i = 0; i < 20; i++)); do
    code=$(http_code "$b" "$p" /)
    if [ -n "$code" ] && [ "$code" != 000 ] && [ "$code" != 502 ] && [ "$code" != 504 ]; then break; fi
    sleep 0.25
  done
  if [ -z "$code" ] || [ "$code" = 000 ] || [ "$code" = 502 ] || [ "$code" = 504 ]; then
    if [ -e "$front.prev" ]; then mv -f -- "$front.prev" "$front"; else disable_site "$front"; fi
    reload_nginx
    fail "the front on $(hostport "$b" "$p") did not answer through release $release (HTTP ${code:-none}); the front was put back"
  fi
  rm -f -- "$front.prev"
  prev=$(current_release)
  if [ -n "$prev" ] && [ "$prev" != "$release" ]; then
    printf '%s\n' "$prev" | write_atomic "$home/shared/previous" root:root 0644
  fi
  ln -sfn "releases/$release" "$home/.current.tmp"
  mv -T "$home/.current.tmp" "$home/current"
  printf '%s\n' "$s" | write_atomic "$(slots_dir)/live" root:root 0644
  log "front $(hostport "$b" "$p") -> release $release (slot $s); current -> releases/$release"
  [ "$fw" = static ] || systemctl enable "$(slot_unit "$s")" >/dev/null 2>&1
  # The release it replaced: nothing reaches it any more (the old nginx workers are gone).
  if [ -n "$live" ]; then clear_slot "$live"; fi
  log "done: $app serving release $release"
}

# Stops release R where it was staged and not promoted (its check failed); the live release is never touched.
do_discard() {
  step "discard $release"
  local live s
  live=$(live_slot)
  [ -z "$live" ] || [ "$(slot_get "$live" release)" != "$release" ] || fail "release $release is serving; not discarding it"
  s=$(other_slot "${live:-b}")
  if [ "$(slot_get "$s" release)" = "$release" ]; then
    clear_slot "$s" kill
    log "stopped release $release (slot $s)"
  else
    log "release $release is not staged: nothing to stop"
  fi
}

# --- prune / status ---
do_prune() {
  step "prune (keep $keep)"
  local cur all=() r n=0 staged
  cur=$(current_release)
  staged=" $(slot_get a release) $(slot_get b release) "
  mapfile -t all < <(find "$home/releases" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | grep -E '^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{7,40}$' | sort -r)
  for r in "${all[@]}"; do
    n=$((n + 1))
    if [ "$n" -le "$keep" ] || [ "$r" = "$cur" ] || [[ $staged == *" $r "* ]]; then continue; fi
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
  # Shared vendors (copied, not linked) no kept release was built from.
  local digests
  digests=$(cat "$home"/releases/*/vendor/.pvedeploy-deps 2>/dev/null || true)
  for v in "$home"/shared/cache/vendor/*; do
    [ -d "$v" ] || continue
    if ! grep -qxF -- "${v##*/}" <<<"$digests"; then rm -rf -- "$v"; log "removed the unused vendor ${v##*/}"; fi
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
  local cur state fw='' live
  cur=$(current_release)
  live=$(live_slot)
  [ -z "$cur" ] || fw=$(cat "$(launch_dir "$cur")/framework" 2>/dev/null || true)
  if [ "$fw" = static ] || [ -z "$live" ]; then state=$(systemctl is-active nginx 2>/dev/null || true)
  else state=$(systemctl is-active "$(slot_unit "$live")" 2>/dev/null || true); fi
  printf 'current=%s\n' "$cur"
  printf 'active=%s\n' "${state:-unknown}"
}

case $cmd in
fetch) do_fetch ;;
deps) step "deps $release ($framework)"; need_release; run_deps; log "done: dependencies of $release" ;;
build) step "build $release ($framework)"; need_release; link_persistent; run_build; log "done: build of $release" ;;
stage) do_stage ;;
promote) do_promote ;;
discard) do_discard ;;
prune) do_prune ;;
status) do_status ;;
esac
