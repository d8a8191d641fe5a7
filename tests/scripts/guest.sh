#!/usr/bin/env bash
# Boots, reaches and tears down one throwaway Debian 12 nspawn guest for trying `scripts/` by hand.
#
# Usage (as root, on a machine prepared like .ci/run does; base image from `pvedeploy-sim --prepare-base`):
#   tests/scripts/guest.sh up   NAME IP    # overlay on the cached base, own cgroup, sshd on IP:22
#   tests/scripts/guest.sh ssh  NAME CMD…  # run CMD as root in the guest (over SSH, like the agent)
#   tests/scripts/guest.sh push NAME       # upload scripts/ to /opt/pvedeploy/scripts (root, 0755)
#   tests/scripts/guest.sh down NAME       # stop the guest by PID, unmount, remove everything
# State lives in ${PVEDEPLOY_SCRIPTTEST_DIR:-/tmp/pvedeploy-scripttest}/NAME. IP must be in 127.0.0.0/8.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
cache=${PVEDEPLOY_CACHE_DIR:-/var/cache/pvedeploy}
base="$cache/base-bookworm-v1.rootfs"
top=${PVEDEPLOY_SCRIPTTEST_DIR:-/tmp/pvedeploy-scripttest}

die() { printf 'guest.sh: %s\n' "$*" >&2; exit 2; }
[ $# -ge 2 ] || die "usage: guest.sh up|ssh|push|down NAME [IP|CMD…]"
cmd=$1 name=$2
shift 2
[[ $name =~ ^[a-z][a-z0-9-]{0,30}$ ]] || die "NAME must match ^[a-z][a-z0-9-]{0,30}$"
g="$top/$name"
cg_dirs=()
for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
  if [ -f "$h/cgroup.procs" ] && { [ "$h" != /sys/fs/cgroup ] || [ -f /sys/fs/cgroup/cgroup.controllers ]; }; then
    cg_dirs+=("$h/pvedeploy-scripttest/$name")
  fi
done

ssh_opts() {
  printf '%s\n' -i "$g/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=5
}

case $cmd in
up)
  [ $# -eq 1 ] || die "up needs IP"
  ip=$1
  [[ $ip =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "IP must be a 127.x.y.z address"
  [ -d "$base" ] || die "no base image at $base (run: pvedeploy-sim --prepare-base)"
  [ ! -e "$g" ] || die "$g exists: run 'guest.sh down $name' first"
  mkdir -p "$g/upper" "$g/work" "$g/root"
  printf '%s\n' "$ip" >"$g/ip"
  mount -t overlay overlay -o "lowerdir=$base,upperdir=$g/upper,workdir=$g/work" "$g/root"
  ssh-keygen -q -t ed25519 -N '' -f "$g/key"
  install -d -m 0700 "$g/root/root/.ssh"
  install -m 0600 "$g/key.pub" "$g/root/root/.ssh/authorized_keys"
  printf 'ListenAddress %s:22\n' "$ip" >"$g/root/etc/ssh/sshd_config.d/00-pvesim-listen.conf"
  printf '%s\n' "$name" >"$g/root/etc/hostname"
  for d in "${cg_dirs[@]}"; do mkdir -p "$d"; done
  # The launcher joins the guest's cgroups, then becomes systemd-nspawn (same PID).
  # shellcheck disable=SC2016 # expanded by the inner bash, from its own arguments
  setsid bash -c 'for d in "${@:2}"; do echo $$ >"$d/cgroup.procs"; done; exec systemd-nspawn --boot \
      --directory="$1/root" --machine="$(basename "$1")" --register=no --keep-unit --resolv-conf=copy-host \
      --timezone=off --link-journal=no --console=passive' launcher "$g" "${cg_dirs[@]}" \
    >"$g/console.log" 2>&1 </dev/null &
  echo $! >"$g/pid"
  mapfile -t o < <(ssh_opts)
  for _ in $(seq 1 100); do
    if ssh "${o[@]}" "root@$ip" true 2>/dev/null; then
      echo "guest $name up on $ip (nspawn pid $(cat "$g/pid"))"
      exit 0
    fi
    kill -0 "$(cat "$g/pid")" 2>/dev/null || die "nspawn exited; see $g/console.log"
    sleep 0.2
  done
  die "guest $name did not answer SSH on $ip:22 in 20 s"
  ;;
ssh)
  mapfile -t o < <(ssh_opts)
  exec ssh "${o[@]}" "root@$(cat "$g/ip")" "$@"
  ;;
push)
  mapfile -t o < <(ssh_opts)
  tar -C "$here" -cf - scripts | ssh "${o[@]}" "root@$(cat "$g/ip")" \
    'rm -rf /opt/pvedeploy/scripts && mkdir -p /opt/pvedeploy && tar -C /opt/pvedeploy --no-same-owner -xf - && chown -R root:root /opt/pvedeploy/scripts && chmod -R go-w /opt/pvedeploy/scripts'
  ;;
down)
  if [ -f "$g/pid" ]; then
    pid=$(cat "$g/pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
  fi
  if mountpoint -q "$g/root" 2>/dev/null; then umount "$g/root"; fi
  for d in "${cg_dirs[@]}"; do
    # nspawn made sub-cgroups (payload/, supervisor/, …): cgroupfs directories go deepest first.
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
    rmdir "${d%/*}" 2>/dev/null || true # the shared parent, once no test guest is left in it
  done
  rm -rf "$g"
  echo "guest $name down"
  ;;
*) die "unknown command $cmd" ;;
esac
