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

# free_port — print a TCP port on 127.0.0.1 that nothing listens on. A port
# picked this way can still be taken by someone else before it is used; the
# callers fail loudly (the daemon does not start) rather than misbehave.
free_port() {
  local port tries=0
  while ((tries < 200)); do
    port=$((20000 + RANDOM % 40000))
    if [ -z "$(ss -Htan "sport = :$port" 2>/dev/null)" ]; then
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
