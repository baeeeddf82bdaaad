# shellcheck shell=bash
# pg.sh — a private PostgreSQL 15 server for a benchmark (store = postgresql).
# Source it after lib.sh; it defines functions only and changes no state
# until pg_start is called.
#
# The server is Debian's postgresql-15 (binaries in $PG_BIN, default
# /usr/lib/postgresql/15/bin), run as the postgres user (it refuses root) from
# a cluster that initdb makes in a directory under the benchmark's work
# directory — the same disk as the other queues, so the comparison is fair.
# It listens on 127.0.0.1:PORT (a free port) and on a unix socket in that
# directory, trusts local connections (role flushgate, no password: nothing
# but this machine can reach it), and keeps PostgreSQL's durable defaults:
# fsync = on and synchronous_commit = on are passed explicitly so that no
# postgresql.conf on the machine can turn them off. pg_stop stops it with
# `pg_ctl stop -m fast` (and by the postmaster's PID if pg_ctl fails); call
# it from the script's cleanup trap. Every wait has a deadline.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# State set by pg_start: the cluster's directory, its port and the
# postmaster's PID (empty while no server runs).
pg_dir=
pg_port=
pg_pid=

# pg_missing — prints why a private server cannot run here (nothing when it
# can), so that a script can skip its PostgreSQL half with a reason.
pg_missing() {
  if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/pg_ctl" ]; then
    echo "$PG_BIN/initdb not installed (Debian package postgresql-15)"
  elif ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null; then
    echo "psql/pg_isready not found (Debian package postgresql-client-15)"
  elif ! id postgres >/dev/null 2>&1; then
    echo "no postgres user on this machine"
  elif [ "$(id -u)" -ne 0 ]; then
    echo "needs root (the server runs as the postgres user via runuser)"
  fi
}

# as_postgres COMMAND... — runs COMMAND as the postgres user.
as_postgres() {
  runuser -u postgres -- "$@"
}

# pg_start DIR LOG — initdb a new cluster in DIR/data (DIR is created and
# given to postgres), start it on 127.0.0.1:free port and a unix socket in
# DIR, and wait until it accepts connections (pg_ctl -w, then pg_isready,
# 60 s each). Sets pg_dir, pg_port, pg_pid. False, with the log's tail on
# stderr, when it does not come up.
pg_start() {
  local dir=$1 log=$2 deadline
  mkdir -p "$dir"
  chown postgres: "$dir"
  chmod 700 "$dir"
  # --no-sync only skips initdb's own flush of the new files (seconds on a
  # busy disk); the running server still fsyncs every commit.
  if ! as_postgres "$PG_BIN/initdb" --no-sync -D "$dir/data" -A trust -U flushgate \
    -E SQL_ASCII --locale=C >"$dir/initdb.log" 2>&1; then
    note "initdb failed: $(tail -n 5 "$dir/initdb.log")"
    return 1
  fi
  pg_port=$(free_port) || { note "no free port for PostgreSQL"; return 1; }
  pg_dir=$dir
  if ! as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir -c fsync=on -c synchronous_commit=on" \
    start >"$dir/pg_ctl.log" 2>&1; then
    note "pg_ctl start failed: $(tail -n 5 "$dir/pg_ctl.log" "$log" 2>/dev/null)"
    pg_read_pid
    pg_stop
    return 1
  fi
  pg_read_pid
  # pg_ctl -w already waited for the postmaster; pg_isready proves that the
  # socket takes connections before the caller relies on it.
  deadline=$((SECONDS + 60))
  until pg_isready -q -h "$dir" -p "$pg_port" -t 2; do
    if ((SECONDS >= deadline)); then
      note "PostgreSQL not ready after 60s: $(tail -n 5 "$log")"
      pg_stop
      return 1
    fi
    sleep 0.1
  done
}

# pg_read_pid — sets pg_pid from the first line of postmaster.pid (empty
# when the file is missing).
pg_read_pid() {
  pg_pid=$(head -n 1 "$pg_dir/data/postmaster.pid" 2>/dev/null || true)
}

# pg_stop — stops the server pg_start started: `pg_ctl stop -m fast` (ends
# the sessions, checkpoints, exits), waiting up to 60 s; if pg_ctl fails,
# SIGTERM then SIGKILL to the postmaster's PID. Quiet when none runs.
pg_stop() {
  [ -n "$pg_dir" ] || return 0
  if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then
    if ! as_postgres "$PG_BIN/pg_ctl" -D "$pg_dir/data" -m fast -w -t 60 stop \
      >>"$pg_dir/pg_ctl.log" 2>&1; then
      note "pg_ctl stop failed; stopping postmaster $pg_pid by PID"
      stop_pid "$pg_pid" 20
    fi
  fi
  pg_pid=
  pg_dir=
}

# pg_psql DBNAME SQL — runs SQL as flushgate over the unix socket; prints the
# result unaligned, without headers (one value per line for one column).
pg_psql() {
  psql -X -q -A -t -v ON_ERROR_STOP=1 \
    "host=$pg_dir port=$pg_port user=flushgate dbname=$1" -c "$2"
}

# pg_create_database NAME — an empty database for flushgated, SQL_ASCII from
# template0 as README.md asks (envelope fields are bytes from the network).
pg_create_database() {
  pg_psql postgres "CREATE DATABASE $1 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
}

# pg_conninfo DBNAME — the conninfo a flushgated node uses: TCP on
# 127.0.0.1, the way nodes of a cluster reach their database.
pg_conninfo() {
  echo "host=127.0.0.1 port=$pg_port user=flushgate dbname=$1"
}

# pg_checkpoint — CHECKPOINT, so that a timed run does not pay for writing
# out the dirty buffers of the run before it.
pg_checkpoint() {
  pg_psql postgres CHECKPOINT >/dev/null
}

# pg_facts — one line for a benchmark's header: the server's version and the
# settings that decide what a commit costs.
pg_facts() {
  pg_psql postgres "SELECT 'postgresql: ' || split_part(version(), ' ', 2)
    || ', fsync=' || current_setting('fsync')
    || ', synchronous_commit=' || current_setting('synchronous_commit')
    || ', wal_sync_method=' || current_setting('wal_sync_method')
    || ', shared_buffers=' || current_setting('shared_buffers')
    || ', data in $pg_dir/data, nodes connect over TCP 127.0.0.1:$pg_port'"
}

# pg_store_conf STORE DBNAME NODE — sets the array store_conf to flushgated's
# configuration lines for STORE: none for sqlite (the default store), else
# store = postgresql, the conninfo of DBNAME (which must exist) and
# node_name NODE (unique per running node).
# shellcheck disable=SC2034  # store_conf is read by the caller
pg_store_conf() {
  store_conf=()
  [ "$1" = postgresql ] || return 0
  store_conf=("store = postgresql" "postgresql_conninfo = $(pg_conninfo "$2")" "node_name = $3")
}

# pg_start_for_bench WORK — pg_start in WORK/pg (log WORK/pg/server.log)
# with a progress note; dies with the reason when PostgreSQL is missing or
# does not start, since a --store that names it cannot run without it.
pg_start_for_bench() {
  local why
  why=$(pg_missing)
  [ -z "$why" ] || die "--store postgresql: $why"
  pg_start "$1/pg" "$1/pg/server.log" || die "the private PostgreSQL did not start"
  note "postgresql: pid $pg_pid on 127.0.0.1:$pg_port and $1/pg"
}

# stores_of CHOICE — the stores a --store CHOICE names, one per line, in the
# order the benchmarks run them; false for an unknown choice.
stores_of() {
  case $1 in
    sqlite | postgresql) echo "$1" ;;
    both) printf '%s\n' sqlite postgresql ;;
    *) return 1 ;;
  esac
}
