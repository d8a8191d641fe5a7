#!/usr/bin/env bash
# What each framework needs at deps, build and start: dependency installs, build commands, entry-point detection.
# shellcheck disable=SC2154,SC2034 # app, home, dest, framework, start_command come from deploy_app.sh; start_argv goes back to it
# Sourced by deploy_app.sh after contract.sh. Functions read the globals app, home, dest (the release directory)
# and framework; every command runs as the app user (as_app / as_app_with_env), with arguments as argv.

# --- repository facts (files are data: read, never executed by us) ---
has_file() { [ -f "$dest/$1" ]; }
# True when package.json declares scripts.NAME.
npm_has_script() {
  has_file package.json &&
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); s=d.get("scripts") or {}; sys.exit(0 if isinstance(s, dict) and sys.argv[2] in s else 1)' \
      "$dest/package.json" "$1"
}
# A digest of the dependency manifests, so an unchanged release skips its install on a second run.
deps_digest() { (cd "$dest" && for f in "$@"; do if [ -f "$f" ]; then sha256sum -- "$f"; fi; done; printf '%s\n' "$framework") | sha256sum | cut -d' ' -f1; }
deps_done() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
mark_done() { printf '%s\n' "$2" | as_app "$app" "$dest" tee "$1" >/dev/null; }

# --- Python (django, flask, fastapi, procfile with requirements.txt/pyproject.toml) ---
python_deps() {
  local py marker digest
  py=$(state_get "$home/shared/install.state" python)
  py=${py:-/usr/bin/python3}
  marker="$dest/.venv/.pvedeploy-deps"
  digest=$(printf '%s %s\n' "$(deps_digest requirements.txt pyproject.toml)" "$py" | sha256sum | cut -d' ' -f1)
  if deps_done "$marker" "$digest"; then log "venv up to date"; return 0; fi
  # Requirements alone (no pyproject.toml, which installs the app itself): one venv per digest, shared by
  # every release that has it, linked in as .venv. Built in place (a venv is not relocatable), complete
  # once its marker is written; an incomplete one is built again.
  if has_file requirements.txt && ! has_file pyproject.toml && [ ! -e "$dest/.venv" ]; then
    local shared="$home/shared/cache/venvs/$digest"
    if deps_done "$shared/.pvedeploy-deps" "$digest"; then
      log "reusing the venv of an earlier release (requirements unchanged)"
    else
      as_app "$app" "$dest" rm -rf -- "$shared"
      as_app "$app" "$dest" mkdir -p -- "$home/shared/cache/venvs"
      python_venv "$py" "$shared" "$digest"
    fi
    as_app "$app" "$dest" ln -s -- "$shared" .venv
    return 0
  fi
  python_venv "$py" .venv "$digest"
}
# Creates the venv VENV (relative to the release, or absolute) and installs the release's dependencies with the
# framework's server in one pip run (one resolve; a version the requirements pin is the one installed).
python_venv() { # python venv digest
  local py=$1 venv=$2 digest=$3 server=()
  log "creating venv with $py"
  as_app "$app" "$dest" "$py" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip install --no-input --progress-bar off -q)
  case $framework in
  django | flask) server=(gunicorn) ;;
  fastapi) server=(uvicorn) ;;
  esac
  if has_file requirements.txt; then
    log "pip install -r requirements.txt ${server[*]}"
    as_app "$app" "$dest" "${pip[@]}" -r requirements.txt "${server[@]}"
  elif has_file pyproject.toml; then
    log "pip install . ${server[*]} (pyproject.toml)"
    as_app "$app" "$dest" "${pip[@]}" . "${server[@]}"
  elif [ ${#server[@]} -gt 0 ]; then
    log "no requirements.txt or pyproject.toml: pip install ${server[*]}"
    as_app "$app" "$dest" "${pip[@]}" "${server[@]}"
  else
    log "no requirements.txt or pyproject.toml"
  fi
  mark_done "$venv/.pvedeploy-deps" "$digest"
}

# --- Node (node, nextjs, static with a build script, procfile with package.json) ---
node_deps() {
  command -v npm >/dev/null || fail "npm is not installed (run install_framework.sh with a Node framework or --node)"
  local marker="$dest/node_modules/.pvedeploy-deps" digest
  digest=$(deps_digest package.json package-lock.json npm-shrinkwrap.json)
  if deps_done "$marker" "$digest"; then log "node_modules up to date"; return 0; fi
  # With a lockfile (the install is exact): one node_modules per digest, installed from package.json and the
  # lockfile alone in shared/cache/node/<digest>, linked into every release that has the same ones. A package
  # whose install needs the rest of the repository (install scripts reading its files) falls back to an
  # install in the release.
  if { has_file package-lock.json || has_file npm-shrinkwrap.json; } && [ ! -e "$dest/node_modules" ]; then
    local shared="$home/shared/cache/node/$digest" f
    if deps_done "$shared/node_modules/.pvedeploy-deps" "$digest"; then
      log "reusing the node_modules of an earlier release (package.json and lockfile unchanged)"
      as_app "$app" "$dest" ln -s -- "$shared/node_modules" node_modules
      return 0
    fi
    as_app "$app" "$dest" rm -rf -- "$shared"
    as_app "$app" "$dest" mkdir -p -- "$shared"
    for f in package.json package-lock.json npm-shrinkwrap.json .npmrc; do
      if has_file "$f"; then as_app "$app" "$dest" cp -- "$f" "$shared/$f"; fi
    done
    log "npm ci (shared by releases with this lockfile)"
    if as_app "$app" "$shared" npm ci --no-audit --no-fund; then
      mark_done "$shared/node_modules/.pvedeploy-deps" "$digest"
      as_app "$app" "$dest" ln -s -- "$shared/node_modules" node_modules
      return 0
    fi
    log "the shared install failed; installing in the release instead"
    as_app "$app" "$dest" rm -rf -- "$shared"
  fi
  if has_file package-lock.json || has_file npm-shrinkwrap.json; then
    log "npm ci"
    as_app "$app" "$dest" npm ci --no-audit --no-fund
  else
    log "npm install (no lockfile)"
    as_app "$app" "$dest" npm install --no-audit --no-fund
  fi
  mark_done "$marker" "$digest"
}

# --- PHP (laravel, procfile with composer.json) ---
php_deps() {
  command -v composer >/dev/null || fail "composer is not installed (run install_framework.sh --framework laravel)"
  local marker="$dest/vendor/.pvedeploy-deps" digest
  digest=$(deps_digest composer.json composer.lock)
  if deps_done "$marker" "$digest"; then log "vendor up to date"; return 0; fi
  # With composer.lock (the install is exact): one vendor per digest in shared/cache/vendor/<digest>, copied into
  # each release with the same files as hard links, except what composer writes per project (vendor/composer and
  # vendor/autoload.php: real copies), then the autoloader is dumped for this release (a linked vendor would not
  # do: composer's autoloader finds the project from its own real path). Built once, complete once its marker is.
  local shared="$home/shared/cache/vendor/$digest"
  if has_file composer.lock && [ ! -e "$dest/vendor" ] && deps_done "$shared/vendor/.pvedeploy-deps" "$digest"; then
    log "reusing the vendor of an earlier release (composer.json and composer.lock unchanged)"
    as_app "$app" "$dest" rm -rf -- .vendor.tmp
    as_app "$app" "$dest" cp -al -- "$shared/vendor" .vendor.tmp
    as_app "$app" "$dest" rm -rf -- .vendor.tmp/composer .vendor.tmp/autoload.php
    as_app "$app" "$dest" cp -a -- "$shared/vendor/composer" .vendor.tmp/composer
    if [ -e "$shared/vendor/autoload.php" ]; then as_app "$app" "$dest" cp -a -- "$shared/vendor/autoload.php" .vendor.tmp/autoload.php; fi
    as_app "$app" "$dest" mv -T -- .vendor.tmp vendor
    log "composer dump-autoload --no-dev --optimize"
    as_app "$app" "$dest" composer dump-autoload --no-dev --no-interaction --optimize
    return 0
  fi
  log "composer install --no-dev"
  as_app "$app" "$dest" composer install --no-dev --no-interaction --prefer-dist --optimize-autoloader --no-progress
  mark_done "$marker" "$digest"
  if has_file composer.lock && [ -d "$dest/vendor" ]; then
    as_app "$app" "$dest" rm -rf -- "$shared"
    as_app "$app" "$dest" mkdir -p -- "$shared"
    as_app "$app" "$dest" cp -al -- vendor "$shared/vendor.tmp"
    as_app "$app" "$dest" rm -rf -- "$shared/vendor.tmp/composer" "$shared/vendor.tmp/autoload.php"
    as_app "$app" "$dest" cp -a -- vendor/composer "$shared/vendor.tmp/composer"
    if [ -e "$dest/vendor/autoload.php" ]; then as_app "$app" "$dest" cp -a -- vendor/autoload.php "$shared/vendor.tmp/autoload.php"; fi
    as_app "$app" "$dest" mv -T -- "$shared/vendor.tmp" "$shared/vendor"
    log "vendor kept for later releases with the same composer.lock"
  fi
}

run_deps() {
  case $framework in
  django | flask | fastapi) python_deps ;;
  node | nextjs) node_deps ;;
  laravel) php_deps ;;
  static)
    if npm_has_script build; then node_deps; else log "static site without a build script: nothing to install"; fi
    ;;
  procfile)
    if has_file requirements.txt || has_file pyproject.toml; then python_deps; fi
    if has_file package.json; then node_deps; fi
    if has_file composer.json; then php_deps; fi
    ;;
  esac
}

# --- build ---
django_manage_dir() { # prints the directory (relative to the release) holding manage.py
  if has_file manage.py; then printf '.'; return 0; fi
  local m
  m=$(cd "$dest" && find . -mindepth 2 -maxdepth 2 -name manage.py -not -path './.venv/*' | sort | head -n 1)
  [ -n "$m" ] || fail "django: no manage.py at the top of the repository or one level below"
  printf '%s' "$(dirname "$m")"
}
run_build() {
  case $framework in
  django)
    local d py
    d=$(django_manage_dir)
    py="$dest/.venv/bin/python"
    [ -x "$py" ] || fail "no venv in this release: run deps first"
    if as_app_with_env "$app" "$dest/$d" "$py" manage.py shell -c \
      'from django.conf import settings; import sys; sys.exit(0 if getattr(settings, "STATIC_ROOT", None) and "django.contrib.staticfiles" in settings.INSTALLED_APPS else 3)' \
      >/dev/null 2>&1; then
      log "manage.py collectstatic --noinput"
      as_app_with_env "$app" "$dest/$d" "$py" manage.py collectstatic --noinput
    else
      log "collectstatic skipped: STATIC_ROOT not set or staticfiles not installed"
    fi
    log "manage.py migrate --noinput"
    as_app_with_env "$app" "$dest/$d" "$py" manage.py migrate --noinput
    ;;
  laravel)
    if has_file artisan; then
      local c
      for c in "migrate --force" "config:cache" "route:cache" "view:cache"; do
        log "php artisan $c"
        # shellcheck disable=SC2086 # fixed artisan words of ours, split on purpose
        as_app_with_env "$app" "$dest" php artisan $c
      done
    else
      log "no artisan file: nothing to build"
    fi
    ;;
  node | nextjs | static)
    if npm_has_script build; then
      log "npm run build"
      as_app_with_env "$app" "$dest" npm run build
    else
      log "package.json has no build script: nothing to build"
    fi
    ;;
  flask | fastapi | procfile) log "$framework: nothing to build" ;;
  esac
}

# --- start: the argv the unit runs (in the release directory, as the app user) ---
py_ident='[A-Za-z_][A-Za-z0-9_]*'
# Flask: wsgi.py → wsgi:app; app.py with `app =` → app:app; app.py with create_app → app:create_app(); else app:app.
flask_entry() {
  if has_file wsgi.py && grep -Eq '^app[[:space:]]*=' "$dest/wsgi.py"; then printf 'wsgi:app'
  elif has_file app.py && grep -Eq '^app[[:space:]]*=' "$dest/app.py"; then printf 'app:app'
  elif has_file app.py && grep -Eq '^def[[:space:]]+create_app[[:space:]]*\(' "$dest/app.py"; then printf 'app:create_app()'
  elif has_file wsgi.py; then printf 'wsgi:app'
  else printf 'app:app'; fi
}
# Django: the settings module named in manage.py (os.environ.setdefault("DJANGO_SETTINGS_MODULE", "x.settings")) → x.wsgi.
django_entry() {
  local d proj
  d=$(django_manage_dir)
  proj=$(grep -Eo "DJANGO_SETTINGS_MODULE['\"][[:space:]]*,[[:space:]]*['\"]$py_ident" "$dest/$d/manage.py" | grep -Eo "$py_ident\$" | head -n 1 || true)
  if [ -z "$proj" ]; then
    local w
    w=$(cd "$dest/$d" && find . -mindepth 2 -maxdepth 2 -name wsgi.py | sort | head -n 1)
    [ -n "$w" ] || fail "django: cannot find the project (no DJANGO_SETTINGS_MODULE in manage.py, no */wsgi.py)"
    proj=$(basename "$(dirname "$w")")
  fi
  [[ $proj =~ ^$py_ident$ ]] || fail "django: project name is not a Python identifier"
  printf '%s %s.wsgi:application' "$d" "$proj"
}
fastapi_entry() {
  if has_file main.py; then printf 'main:app'
  elif has_file app/main.py; then printf 'app.main:app'
  elif has_file app.py; then printf 'app:app'
  else fail "fastapi: no main.py, app/main.py or app.py"; fi
}
procfile_web() { # prints the command of the Procfile's web: line
  has_file Procfile || fail "procfile: the repository has no Procfile"
  local line
  line=$(grep -E '^web:' "$dest/Procfile" | head -n 1 | tr -d '\r' || true)
  [ -n "$line" ] || fail "procfile: no web: line in Procfile"
  line=${line#web:}
  line=${line#"${line%%[![:space:]]*}"}
  [ -n "$line" ] || fail "procfile: the web: line is empty"
  printf '%s' "$line"
}
hostport() { if [[ $1 == *:* ]]; then printf '[%s]:%s' "$1" "$2"; else printf '%s:%s' "$1" "$2"; fi; }

# Sets the array start_argv for this release in slot $slot. $start_command (from --start-command) wins for process frameworks.
start_argv=()
compute_start() { # bind port
  local bind=$1 port=$2 venv="$dest/.venv/bin"
  if [ -n "$start_command" ] && [ "$framework" != static ] && [ "$framework" != laravel ]; then
    start_argv=(/bin/sh -c "$start_command")
    return 0
  fi
  case $framework in
  flask | django)
    [ -x "$venv/gunicorn" ] || fail "gunicorn missing from the venv: run deps first"
    if [ "$framework" = flask ]; then
      start_argv=(.venv/bin/gunicorn --bind "$(hostport "$bind" "$port")" --workers 2 --access-logfile - "$(flask_entry)")
    else
      local de dir mod
      de=$(django_entry)
      dir=${de%% *} mod=${de#* }
      start_argv=(.venv/bin/gunicorn --chdir "$dir" --bind "$(hostport "$bind" "$port")" --workers 2 --access-logfile - "$mod")
    fi
    ;;
  fastapi)
    [ -x "$venv/uvicorn" ] || fail "uvicorn missing from the venv: run deps first"
    start_argv=(.venv/bin/uvicorn --host "$bind" --port "$port" "$(fastapi_entry)")
    ;;
  nextjs)
    [ -x "$dest/node_modules/.bin/next" ] || fail "nextjs: node_modules/.bin/next missing: run deps first"
    start_argv=(node_modules/.bin/next start -H "$bind" -p "$port")
    ;;
  node)
    if npm_has_script start; then start_argv=(npm start)
    elif has_file server.js; then start_argv=(node server.js)
    elif has_file index.js; then start_argv=(node index.js)
    else fail "node: no start script in package.json, no server.js, no index.js"; fi
    ;;
  procfile) start_argv=(/bin/sh -c "$(procfile_web)") ;;
  laravel)
    local fpm
    fpm=$(state_get "$home/shared/install.state" php_fpm)
    [ -n "$fpm" ] || fail "laravel: no php-fpm recorded in install.state (run install_framework.sh)"
    start_argv=("$fpm" --nodaemonize --fpm-config "$home/shared/php-fpm-$slot.conf")
    ;;
  static) start_argv=() ;;
  esac
}

# static: the directory nginx serves, relative to the release (index.html at the top wins, then build output).
static_webroot() {
  if has_file index.html; then printf '.'; return 0; fi
  local d
  for d in dist build out public _site; do
    if [ -f "$dest/$d/index.html" ]; then printf '%s' "$d"; return 0; fi
  done
  printf '.'
}
