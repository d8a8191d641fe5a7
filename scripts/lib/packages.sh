#!/usr/bin/env bash
# Installs system packages and language runtimes idempotently: apt only when something is missing, npm from its registry tarball.
# shellcheck disable=SC2034 # python_bin and installed_pkgs are set here for install_framework.sh
# Sourced by install_framework.sh after contract.sh; defines functions only.

export DEBIAN_FRONTEND=noninteractive
# npm is not taken from Debian (apt `npm` pulls ~500 MB and took 124 s in a guest); its registry tarball is
# 2.7 MB. Pinned with its registry integrity so a tampered download is refused. npm 10 runs on Node >= 18.17.
readonly NPM_VERSION=10.9.2
# sha512 of the tarball, hex (the registry's dist.integrity sha512-iriPEPIk…risgQ== decoded).
readonly NPM_SHA512=8ab88f10f224a0c614cb717a7f7c30499014f77134120e9c1f0211ea3cf3397592cbe483feb38e0c4b3be1c54e347292c76a1b5edb94a3289d5448484ab8ac81
readonly NPM_REGISTRY=${PVEDEPLOY_NPM_REGISTRY:-https://registry.npmjs.org}

installed_pkgs=()

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
# True when apt knows an installable candidate for the package.
pkg_available() {
  local cand
  cand=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
  [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

apt_updated=no
apt_update_once() {
  if [ "$apt_updated" = no ]; then
    apt-get update -qq >>/var/log/pvedeploy-apt.log 2>&1 || fail "apt-get update failed (log in /var/log/pvedeploy-apt.log)"
    apt_updated=yes
  fi
}

# Installs the packages that are missing; does nothing (no apt call at all) when all are present.
# Services the packages would start are held back (policy-rc.d) so a package's default config (nginx on :80)
# cannot collide with other guests; we start what we configured ourselves.
apt_install() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then
    log "packages already installed: $*"
    return 0
  fi
  log "installing packages: ${missing[*]}"
  # Package lists may be absent (cleaned images): fetch them before asking apt about candidates.
  if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then apt_update_once; fi
  local policy=/usr/sbin/policy-rc.d had_policy=no
  [ -e "$policy" ] && had_policy=yes
  if [ "$had_policy" = no ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"; fi
  local rc=0 aptlog=/var/log/pvedeploy-apt.log
  # apt/dpkg chatter goes to a log; its tail reaches stderr only when the install fails.
  { apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}" ||
    { apt_update_once && apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}"; }
  } >>"$aptlog" 2>&1 || rc=$?
  if [ "$had_policy" = no ]; then rm -f "$policy"; fi
  if [ "$rc" -ne 0 ]; then
    tail -n 25 "$aptlog" >&2
    fail "apt-get install ${missing[*]} failed (exit $rc; full log in $aptlog)"
  fi
  installed_pkgs+=("${missing[@]}")
  apt-get clean
}

# Python: Debian's python3 + venv, or python3.X when --python X asks for a version apt offers.
# Sets python_bin to the interpreter's path.
python_bin=
install_python() { # [version]
  local v=${1:-}
  if [ -z "$v" ]; then
    apt_install python3 python3-venv
    python_bin=/usr/bin/python3
    return
  fi
  [[ $v == 3.* ]] || fail "--python $v: only Python 3.x is supported"
  if ! pkg_installed "python$v" || ! pkg_installed "python$v-venv"; then
    pkg_available "python$v-venv" || { apt_update_once; pkg_available "python$v-venv"; } ||
      fail "--python $v: python$v-venv is not available from this guest's apt sources (available: $(apt-cache search --names-only '^python3\.[0-9]+-venv$' | cut -d' ' -f1 | tr '\n' ' '))"
  fi
  apt_install "python$v" "python$v-venv"
  python_bin=/usr/bin/python$v
}

# Node: Debian's nodejs (must be >= 18; --node MAJOR must match it) and npm from the registry tarball.
install_node() { # [major]
  local want=${1:-} have
  apt_install nodejs ca-certificates curl
  have=$(node -p 'process.versions.node')
  if [ -n "$want" ] && [ "${have%%.*}" != "${want%%.*}" ]; then
    fail "--node $want: this guest's apt sources offer Node $have only (nodejs.org is not reachable)"
  fi
  [ "${have%%.*}" -ge 18 ] || fail "Node $have from apt is too old (need >= 18 for npm $NPM_VERSION)"
  install_npm
}

install_npm() {
  local dir=/opt/pvedeploy/npm/$NPM_VERSION
  if [ -x "$dir/package/bin/npm-cli.js" ] && [ "$(readlink /usr/local/bin/npm || true)" = "$dir/package/bin/npm-cli.js" ]; then
    log "npm $NPM_VERSION already installed"
    return 0
  fi
  log "installing npm $NPM_VERSION from $NPM_REGISTRY"
  local tmp
  tmp=$(mktemp -d)
  curl -fsSL --retry 3 -o "$tmp/npm.tgz" "$NPM_REGISTRY/npm/-/npm-$NPM_VERSION.tgz" || fail "downloading npm $NPM_VERSION failed"
  printf '%s  %s\n' "$NPM_SHA512" "$tmp/npm.tgz" | sha512sum --check --quiet --status || fail "npm $NPM_VERSION tarball does not match its pinned sha512"
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -xzf "$tmp/npm.tgz" -C "$dir" --no-same-owner
  rm -rf "$tmp"
  ln -sfn "$dir/package/bin/npm-cli.js" /usr/local/bin/npm
  ln -sfn "$dir/package/bin/npx-cli.js" /usr/local/bin/npx
  installed_pkgs+=("npm@$NPM_VERSION")
}

# PHP for Laravel: php-fpm, php-cli and the extensions Laravel needs, composer, unzip; versioned names with --php.
install_php() { # [version]
  local v=${1:-} p=php
  if [ -n "$v" ]; then
    p="php$v"
    pkg_installed "$p-fpm" || pkg_available "$p-fpm" || { apt_update_once; pkg_available "$p-fpm"; } ||
      fail "--php $v: $p-fpm is not available from this guest's apt sources"
  fi
  local exts=(fpm cli mbstring xml curl zip bcmath intl sqlite3 mysql pgsql)
  apt_install "${exts[@]/#/$p-}" composer unzip git
}
