# Shared helpers for the scripts in this directory (sourced, not run).
# Each ensure_* installs what is missing from the registries this project
# uses (Debian packages, crates.io, npm) and does nothing when present.

PG_BIN=/usr/lib/postgresql/15/bin
TANSU_VERSION=0.6.0

log() { echo "[$(basename "$0")] $*" >&2; }

# A free TCP port on the loopback interface (the kernel picks it).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: $* (run as root, or install them: apt-get install -y $*)"
    return 1
  fi
  log "installing Debian packages: $*"
  (
    # One apt at a time, also when two test runs start together.
    flock 9
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
  ) 9>/tmp/.realchat-apt.lock
}

ensure_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
}

ensure_postgres() {
  [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/psql" ] || apt_install postgresql-15 postgresql-client-15
}

need_root_or_postgres_user() {
  # PostgreSQL refuses to run as root; as root we run it as `postgres`.
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    ensure_postgres
  fi
}

run_as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

chown_postgres() {
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$@"; fi
}

# Prints the path of a tansu $TANSU_VERSION binary, building it once (with
# only the SQLite engine) when it is missing. The build takes minutes.
ensure_tansu() {
  local bin
  for bin in "$(command -v tansu 2>/dev/null || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"; do
    if [ -n "$bin" ] && [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
      echo "$bin"
      return 0
    fi
  done
  log "building tansu $TANSU_VERSION (SQLite engine only; several minutes, once)"
  (
    flock 9
    cargo install tansu --version "$TANSU_VERSION" --locked \
      --no-default-features --features libsql >&2
  ) 9>/tmp/.realchat-tansu.lock
  echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
}

# Succeeds when a Kafka-protocol broker answers an ApiVersions request.
kafka_api_versions() {
  python3 - "$1" "$2" <<'PY'
import socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
client = b"realchat-probe"
# RequestHeader v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id
body = struct.pack(">hhih", 18, 0, 4242, len(client)) + client
with socket.create_connection((host, port), timeout=2) as s:
    s.settimeout(2)
    s.sendall(struct.pack(">i", len(body)) + body)
    header = b""
    while len(header) < 8:
        chunk = s.recv(8 - len(header))
        if not chunk:
            sys.exit(1)
        header += chunk
    size, correlation = struct.unpack(">ii", header)
    sys.exit(0 if correlation == 4242 and size > 4 else 1)
PY
}
