# shellcheck shell=bash
# lib.sh — shell helpers shared by the benchmarks in scripts/bench/ and by
# scripts/testbed/. Source it; it defines functions only and changes no state.
#
# Every wait here has a deadline in seconds; nothing loops forever. Everything
# talks to 127.0.0.0/8 only.

# die MESSAGE... — print "NAME: MESSAGE" on stderr and exit 1.
die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# note MESSAGE... — progress line on stderr (stdout stays for results).
note() {
  echo "${0##*/}: $*" >&2
}

# now_ns — monotonic-enough wall clock in nanoseconds, for elapsed times.
now_ns() {
  date +%s%N
}

# elapsed_s START_NS END_NS — seconds with three decimals.
elapsed_s() {
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'
}

# tcp_answers HOST PORT — true when a TCP connect to HOST:PORT succeeds
# within one second.
tcp_answers() {
  # shellcheck disable=SC2016  # $0/$1 expand in the inner bash, on purpose
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# wait_tcp HOST PORT SECONDS — poll until HOST:PORT accepts a connection;
# false after SECONDS.
wait_tcp() {
  local host=$1 port=$2 deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    tcp_answers "$host" "$port" && return 0
    sleep 0.1
  done
  return 1
}

# wait_file PATH SECONDS — poll until PATH exists (any type); false after SECONDS.
wait_file() {
  local path=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    [ -e "$path" ] && return 0
    sleep 0.1
  done
  return 1
}

# wait_pid_gone PID SECONDS — poll until process PID has exited; false after
# SECONDS.
wait_pid_gone() {
  local pid=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# port_claimed PORT — true when a running test holds the port's claim
# (tests/support/ports.cpp locks /tmp/flushgate-test-ports/PORT).
port_claimed() {
  [ -e "/tmp/flushgate-test-ports/$1" ] && ! flock -n "/tmp/flushgate-test-ports/$1" true 2>/dev/null
}

# free_port — print a TCP port on 127.0.0.1 that nothing listens on, from
# 20000-32767 so that no outgoing connection (ephemeral ports) sits on it. A port
# picked this way can still be taken by someone else before it is used; the
# callers fail loudly (the daemon does not start) rather than misbehave.
free_port() {
  local port tries=0
  while ((tries < 200)); do
    port=$((20000 + RANDOM % 12768))  # below the ephemeral range (32768-)
    if [ -z "$(ss -Htan "sport = :$port" 2>/dev/null)" ] && ! port_claimed "$port"; then
      echo "$port"
      return 0
    fi
    tries=$((tries + 1))
  done
  return 1
}

# count_files DIR... — number of regular files below the given directories
# (missing directories count as empty).
count_files() {
  local d total=0 n
  for d in "$@"; do
    [ -d "$d" ] || continue
    n=$(find "$d" -type f | wc -l)
    total=$((total + n))
  done
  echo "$total"
}

# peak_rss_kb PID — VmHWM of a running process in kB, or "?" when unknown.
peak_rss_kb() {
  awk '/^VmHWM:/ { print $2; found = 1 } END { if (!found) print "?" }' \
    "/proc/$1/status" 2>/dev/null || echo "?"
}

# machine_summary — one line: cores, CPU model, memory, the disk under PATH.
machine_summary() {
  local path=${1:-.} cpu mem disk
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  disk=$(df -PhT "$path" | awk 'NR == 2 { print $1 " (" $2 ", " $3 ")" }')
  echo "nproc $(nproc), ${cpu:-unknown CPU}, $mem RAM, disk $disk"
}

# stop_pid PID SECONDS — SIGTERM to PID, wait up to SECONDS for it to exit,
# then SIGKILL. Reaps it when it is a child of this shell. Quiet when PID is
# empty or already gone.
stop_pid() {
  local pid=$1 seconds=${2:-20}
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_gone "$pid" "$seconds"; then
      note "pid $pid ignored SIGTERM for ${seconds}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      wait_pid_gone "$pid" 5 || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# in_ns NS COMMAND... — run COMMAND in network namespace NS, or here when NS
# is empty. Not for background jobs: "in_ns ... &" forks a subshell, so $!
# would not be COMMAND's PID; use ns_prefix there.
in_ns() {
  local ns=$1
  shift
  if [ -n "$ns" ]; then
    ip netns exec "$ns" "$@"
  else
    "$@"
  fi
}

# ns_prefix NS — sets the array ns_cmd to the words that run a command in
# namespace NS (empty for NS ""), for "${ns_cmd[@]}" COMMAND... & — ip netns
# exec execs COMMAND, so $! is COMMAND's own PID.
ns_prefix() {
  ns_cmd=()
  [ -z "$1" ] || ns_cmd=(ip netns exec "$1")
}

# wait_tcp_ns NS HOST PORT SECONDS — wait_tcp, probing from namespace NS
# ("" = this one).
wait_tcp_ns() {
  local ns=$1 host=$2 port=$3 deadline=$((SECONDS + $4))
  while ((SECONDS < deadline)); do
    # shellcheck disable=SC2016  # $0/$1 expand in the inner bash, on purpose
    in_ns "$ns" timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# machine_facts PATH — lines for a benchmark's header: cores, CPU, memory,
# the disk and file system under PATH, the kernel.
machine_facts() {
  echo "machine: $(machine_summary "$1")"
  echo "kernel:  $(uname -sr); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# figures_vary_note — the caveat every benchmark table ends with.
figures_vary_note() {
  echo "note: timings vary from run to run and machine to machine (shared cores," \
    "disk cache, other load); compare figures from the same run only."
}

# --- the counting sink (scripts/bench/sink) --------------------------------

# sink_binary BUILD WORK — path of flushgate_sink: $FLUSHGATE_SINK, else
# BUILD/scripts/bench/sink/flushgate_sink, else compiled from
# scripts/bench/sink/sink.cpp into WORK (needs c++). False when none works.
sink_binary() {
  local build=$1 work=$2 src
  src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/sink/sink.cpp
  if [ -n "${FLUSHGATE_SINK:-}" ] && [ -x "$FLUSHGATE_SINK" ]; then
    echo "$FLUSHGATE_SINK"
  elif [ -x "$build/scripts/bench/sink/flushgate_sink" ]; then
    echo "$build/scripts/bench/sink/flushgate_sink"
  elif [ -x "$work/flushgate_sink" ]; then
    echo "$work/flushgate_sink"
  elif command -v c++ >/dev/null &&
    c++ -std=c++20 -O2 -o "$work/flushgate_sink" "$src" >&2; then
    note "built $work/flushgate_sink from $src (target flushgate_sink not in $build)"
    echo "$work/flushgate_sink"
  else
    return 1
  fi
}

# start_sink BINARY STATUS_FILE LOG [--ns NS] SINK_OPTIONS... — starts
# flushgate_sink in the background (inside namespace NS with --ns), waits up
# to 10 s for its "ready PORT" line and sets sink_pid and sink_port. False
# when it does not come up (sink_pid is then reaped and empty).
start_sink() {
  local bin=$1 status=$2 log=$3 ns='' deadline
  shift 3
  if [ "${1:-}" = --ns ]; then
    ns=$2
    shift 2
  fi
  rm -f "$status"
  ns_prefix "$ns"
  "${ns_cmd[@]}" "$bin" --status "$status" "$@" >"$log" 2>&1 &
  sink_pid=$!
  sink_port=
  deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    sink_port=$(awk '/^ready / { print $2; exit }' "$log")
    [ -n "$sink_port" ] && return 0
    kill -0 "$sink_pid" 2>/dev/null || break
    sleep 0.05
  done
  note "flushgate_sink did not start: $(tail -n 3 "$log")"
  stop_pid "$sink_pid" 5
  sink_pid=
  return 1
}

# sink_field STATUS_FILE KEY — one value from the sink's status line (empty
# when the file or the key is missing).
sink_field() {
  [ -f "$1" ] || return 0
  tr ' ' '\n' <"$1" | awk -F= -v k="$2" '$1 == k { print $2; exit }'
}

# wait_sink_messages STATUS_FILE N SECONDS [PID] — poll until the sink has
# answered at least N messages; false after SECONDS or when PID has exited.
wait_sink_messages() {
  local status=$1 want=$2 deadline=$((SECONDS + $3)) pid=${4:-} got
  while ((SECONDS < deadline)); do
    got=$(sink_field "$status" messages)
    [ -n "$got" ] && ((got >= want)) && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.1
  done
  return 1
}

# --- flushgated -------------------------------------------------------------

# fg_write_config DIR LISTEN [LINE...] — writes DIR/flushgated.conf (data and
# log under DIR, SMTP on LISTEN, then each LINE, e.g. "log_level = debug");
# prints the file's path.
fg_write_config() {
  local dir=$1 listen=$2
  shift 2
  mkdir -p "$dir/data"
  {
    echo "data_dir = $dir/data"
    echo "smtpd_listen = $listen"
    echo "myhostname = gw.isp.test"
    echo "log_target = $dir/flushgated.log"
    echo "queue_min_free = 10M"
    local line
    for line in "$@"; do echo "$line"; done
  } >"$dir/flushgated.conf"
  echo "$dir/flushgated.conf"
}

# fg_start FLUSHGATED FLUSHGATE CONF LISTEN_HOST LISTEN_PORT [NS] — starts
# flushgated --config CONF in the background (inside namespace NS if given),
# waits up to 30 s until the control socket answers the CLI and the SMTP port
# accepts, and sets fg_pid. False when it exits or does not get ready (its
# log tail goes to stderr; fg_pid is then empty).
fg_start() {
  local daemon=$1 cli=$2 conf=$3 host=$4 port=$5 ns=${6:-} dir status=0
  dir=$(dirname "$conf")
  ns_prefix "$ns"
  "${ns_cmd[@]}" "$daemon" --config "$conf" >"$dir/stdout.log" 2>&1 &
  fg_pid=$!
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)) && kill -0 "$fg_pid" 2>/dev/null; do
    if timeout 5 "$cli" --config "$conf" --json queue summary >/dev/null 2>&1 &&
      wait_tcp_ns "$ns" "$host" "$port" 1; then
      return 0
    fi
    sleep 0.1
  done
  if kill -0 "$fg_pid" 2>/dev/null; then
    note "flushgated (pid $fg_pid) not ready after 30s"
    stop_pid "$fg_pid" 10
  else
    wait "$fg_pid" || status=$?
    note "flushgated exited with status $status before it was ready"
  fi
  tail -n 10 "$dir/stdout.log" "$dir/flushgated.log" >&2 2>/dev/null || true
  fg_pid=
  return 1
}

# fg_queued FLUSHGATE CONF CUSTOMER — messages queued for CUSTOMER (from
# `flushgate --json queue summary`), or nothing when the daemon does not say.
fg_queued() {
  timeout 30 "$1" --config "$2" --json queue summary 2>/dev/null |
    python3 -c '
import json, sys
want = sys.argv[1]
try:
    rows = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
print(sum(int(r.get("messages", 0)) for r in rows if r.get("customer") == want))
' "$3" 2>/dev/null || true
}

# wait_fg_queued FLUSHGATE CONF CUSTOMER N SECONDS — poll until CUSTOMER has
# exactly N messages queued; false after SECONDS.
wait_fg_queued() {
  local deadline=$((SECONDS + $5))
  while ((SECONDS < deadline)); do
    [ "$(fg_queued "$1" "$2" "$3")" = "$4" ] && return 0
    sleep 0.2
  done
  return 1
}

# --- Postfix ----------------------------------------------------------------

# postfix_deferred DIR — messages a private Postfix instance under DIR holds
# in queue/deferred.
postfix_deferred() {
  count_files "$1/queue/deferred"
}

# postfix_wait_settled DIR SECONDS — poll until nothing is left in the
# instance's incoming, active and maildrop queues (qmgr has moved every
# held message to deferred/); false after SECONDS.
postfix_wait_settled() {
  local dir=$1 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    [ "$(count_files "$dir"/queue/{incoming,active,maildrop})" -eq 0 ] && return 0
    sleep 0.5
  done
  return 1
}

# smtp_read_reply FD — reads one SMTP reply (all lines of a multi-line one)
# from FD into smtp_line (its last line, CR removed); false after 10 s
# without a line or at end of input.
smtp_read_reply() {
  while IFS= read -r -t 10 smtp_line <&"$1"; do
    smtp_line=${smtp_line%$'\r'}
    [[ $smtp_line =~ ^[0-9]{3}- ]] || return 0
  done
  return 1
}

# smtp_etrn HOST PORT DOMAIN — one SMTP session: EHLO, "ETRN DOMAIN", QUIT.
# Prints the ETRN reply; true when it starts with 250.
smtp_etrn() {
  local host=$1 port=$2 domain=$3 fd reply=
  exec {fd}<>"/dev/tcp/$host/$port" || return 1
  if smtp_read_reply "$fd" && [[ $smtp_line == 220* ]]; then
    printf 'EHLO bench.test\r\n' >&"$fd"
    if smtp_read_reply "$fd" && [[ $smtp_line == 250* ]]; then
      printf 'ETRN %s\r\n' "$domain" >&"$fd"
      smtp_read_reply "$fd" && reply=$smtp_line
      printf 'QUIT\r\n' >&"$fd"
      smtp_read_reply "$fd" || true
    fi
  fi
  exec {fd}>&-
  echo "${reply:-no reply}"
  [[ $reply == 250* ]]
}
