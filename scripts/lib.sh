# Shared settings and helpers for the local stack scripts. Sourced, never run.
# Every value can be overridden from the environment or .env (see .env.example).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Configuration: the caller's environment wins, then .env, then the local defaults in .env.example.
load_env_defaults() {
  local file="$1" line name
  [ -f "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    name="${line%%=*}"
    [ -n "${!name+x}" ] || export "$name=${line#*=}"
  done <"$file"
}
load_env_defaults .env
load_env_defaults .env.example

export STACK_NAME="${STACK_NAME:-dev}"
export DB_PORT="${DB_PORT:-54322}"
export API_PORT="${API_PORT:-54321}"
export SUPABASE_JWT_SECRET="${SUPABASE_JWT_SECRET:-super-secret-jwt-token-with-at-least-32-characters-long}"
export DB_URL="postgresql://postgres:postgres@127.0.0.1:${DB_PORT}/postgres"
# The Supabase CLI takes 127.0.0.1:<config port> for its Docker stack; "localhost" makes it use --db-url as given.
export CLI_DB_URL="postgresql://postgres:postgres@localhost:${DB_PORT}/postgres?sslmode=disable"
export SUPABASE_DB_URL="${DB_URL}"
export SUPABASE_URL="http://127.0.0.1:${API_PORT}"
export PATH="$ROOT/node_modules/.bin:$PATH"
# The Supabase CLI's well-known local demo keys, signed with the secret above (iss supabase-demo, exp 1983812996).
export SUPABASE_ANON_KEY="${SUPABASE_ANON_KEY:-eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0}"
export SUPABASE_SERVICE_ROLE_KEY="${SUPABASE_SERVICE_ROLE_KEY:-eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU}"
export PGCONNECT_TIMEOUT=5

# The cluster lives in an ignored folder of the repo; the postgres OS user must be able to reach it
# (initdb refuses root). When the checkout sits where that user cannot go (/root, say), the data goes
# to /var/tmp under a name derived from the checkout, and .stack/<name> points there.
STACK_DIR="$ROOT/.stack/$STACK_NAME"

say() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

pg_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$d" ] || die "no PostgreSQL server found; run 'npm run setup' (installs postgresql-15 with apt-get)"
  printf '%s' "$d"
}

# Run a command as the cluster's owner: the postgres OS user when we are root, ourselves otherwise.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    # From /, since the postgres user may not be allowed into the checkout (every path we pass is absolute).
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

stack_data_dir() {
  mkdir -p "$ROOT/.stack"
  if [ -L "$STACK_DIR" ] || [ -d "$STACK_DIR" ]; then
    printf '%s' "$(readlink -f "$STACK_DIR")"; return
  fi
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$ROOT/.stack" 2>/dev/null; then
    local far="/var/tmp/stockhold-$(printf '%s' "$ROOT" | md5sum | cut -c1-10)/$STACK_NAME"
    mkdir -p "$far"
    ln -s "$far" "$STACK_DIR"
  else
    mkdir -p "$STACK_DIR"
  fi
  printf '%s' "$(readlink -f "$STACK_DIR")"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

psql_db() {
  psql "$DB_URL" -v ON_ERROR_STOP=1 -X -q "$@"
}
