#!/usr/bin/env bash
# Installs what the stack needs and is missing: npm dependencies (Deno and the Supabase CLI come from npm)
# and Debian's PostgreSQL server with pg_cron, pgTAP, plpgsql_check and pg_prove. Safe to run again: it
# installs nothing that is already there.
. "$(dirname "$0")/lib.sh"

if [ ! -x node_modules/.bin/supabase ] || [ ! -x node_modules/.bin/deno ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error >&2 || die "npm ci failed; check your network access to the npm registry"
fi

PG_MAJOR="${PG_MAJOR:-15}"
wanted=(postgresql-$PG_MAJOR postgresql-$PG_MAJOR-cron postgresql-$PG_MAJOR-pgtap postgresql-$PG_MAJOR-plpgsql-check libtap-parser-sourcehandler-pgtap-perl chromium)
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    die "missing packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}"; fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed; check access to Debian's package mirrors"
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "could not install ${missing[*]} with apt-get; install them by hand and run again"
fi
