#!/usr/bin/env bash
# ppp_scripts_test.sh — runs scripts/ppp/ipv6-up and ipv6-down (and ip-up,
# for its session id) the way pppd does: an empty environment, the six
# arguments, PEERNAME and PPPD_PID. The flushgate CLI and logger are fakes
# that append their arguments to a file: what is under test is the arguments
# the scripts build. The scripts call the CLI in the background and log after
# it, so each check first waits (bounded) for the log line.
#
# Usage: ppp_scripts_test.sh SOURCE_DIR CASE   (exit 0 pass, 1 fail, 77 skip)
set -euo pipefail
src=${1:?usage: ppp_scripts_test.sh SOURCE_DIR CASE}
case_name=${2:?usage: ppp_scripts_test.sh SOURCE_DIR CASE}
scripts=$src/scripts/ppp

dir=$(mktemp -d "${TMPDIR:-/tmp}/flushgate-ppp.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cfg=$dir/flushgated.cf
table=$dir/ppp-ipv6-prefixes
calls=$dir/cli.calls
log=$dir/logger.calls
# Builtins only: the scripts give them no PATH either.
printf '#!/bin/sh\nprintf "%%s\\n" "$*" >> %s\n' "$calls" > "$dir/cli"
printf '#!/bin/sh\nprintf "%%s\\n" "$*" >> %s\n' "$log" > "$dir/logger"
chmod 755 "$dir/cli" "$dir/logger"

failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

# run SCRIPT [VAR=VALUE...] -- ARGS...: the script as pppd runs it; its
# stderr is kept, its exit status must be 0.
run() {
  local script=$1; shift
  local vars=()
  while [ "$1" != "--" ]; do vars+=("$1"); shift; done
  shift
  local rc=0
  /usr/bin/env -i FLUSHGATE_CLI="$dir/cli" FLUSHGATE_CONFIG="$cfg" \
    FLUSHGATE_IPV6_PREFIXES="$table" FLUSHGATE_LOGGER="$dir/logger" "${vars[@]}" \
    /usr/bin/timeout 10 "$scripts/$script" "$@" 2>>"$dir/stderr" || rc=$?
  [ "$rc" -eq 0 ] || fail "$script: got exit $rc, want 0"
}
# pppd's six arguments for ipv6-up/ipv6-down: link-local addresses only.
v6args=(ppp0 /dev/ttyS0 57600 fe80::1 fe80::2 "")
v4args=(ppp0 /dev/ttyS0 57600 192.0.2.1 192.0.2.77 "")

# wait_log TEXT: poll the fake logger's file for TEXT, up to 5 s.
wait_log() {
  local deadline=$((SECONDS + 5))
  until grep -qF -- "$1" "$log" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail "got log [$(cat "$log" 2>/dev/null)], want a line with [$1] within 5 s"
      return 0
    fi
    sleep 0.05
  done
}
# expect_calls LINE...: the CLI calls so far, one line each, in order.
expect_calls() {
  local want got
  want=$(printf '%s\n' "$@")
  got=$(cat "$calls" 2>/dev/null || true)
  [ "$got" = "$want" ] || fail "got CLI calls [$got], want [$want]"
}
expect_no_calls() {
  [ ! -e "$calls" ] || fail "got CLI calls [$(cat "$calls")], want none"
}
expect_no_log() {
  ! grep -qF -- "$1" "$log" 2>/dev/null || fail "got log [$(cat "$log")], want no [$1]"
}
# session_of: the --session value of the last CLI call.
session_of() {
  local line
  line=$(tail -n 1 "$calls" 2>/dev/null || true)
  line=${line#*--session }
  echo "${line%% *}"
}
reset() { rm -f "$calls" "$log"; }

case $case_name in
  Ipv6UpReportsAListedPrefix)
    printf 'acme-biz 2001:db8:0:5600::/56\n' > "$table"
    run ipv6-up PEERNAME=acme-biz PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "link up acme-biz 2001:db8:0:5600::/56 (ppp0, ppp-4242-ppp0)"
    expect_calls "--config $cfg link up acme-biz --prefix 2001:db8:0:5600::/56 --session ppp-4242-ppp0"
    # Without PEERNAME the ipparam names the peer, as in ip-up.
    reset
    run ipv6-up PPPD_PID=4242 -- ppp0 /dev/ttyS0 57600 fe80::1 fe80::2 acme-biz
    wait_log "link up acme-biz"
    expect_calls "--config $cfg link up acme-biz --prefix 2001:db8:0:5600::/56 --session ppp-4242-ppp0"
    ;;
  Ipv6UpNeverReportsALinkLocalAddress)
    printf 'acme-biz 2001:db8:0:5600::/56\n' > "$table"
    run ipv6-up PEERNAME=acme-biz PPPD_PID=4242 LLLOCAL=fe80::1 LLREMOTE=fe80::2 -- "${v6args[@]}"
    wait_log "link up acme-biz"
    grep -qi 'fe80' "$calls" && fail "got CLI calls [$(cat "$calls")], want no link-local address"
    # Nor from the table: a link-local "prefix" is skipped with a warning.
    reset
    printf 'acme-biz FE80::/64\n' > "$table"
    run ipv6-up PEERNAME=acme-biz PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "nothing known about IPv6 for acme-biz"
    wait_log "mail.warning $table:1: FE80::/64 is link-local"
    expect_no_calls
    ;;
  Ipv6UpSharesIpUpsSession)
    printf 'acme-biz 2001:db8:0:5600::/56\n' > "$table"
    run ip-up PEERNAME=acme-biz PPPD_PID=4242 -- "${v4args[@]}"
    wait_log "link up acme-biz 192.0.2.77"
    v4=$(session_of)
    run ipv6-up PEERNAME=acme-biz PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "link up acme-biz 2001:db8:0:5600::/56"
    v6=$(session_of)
    [ "$v4" = "ppp-4242-ppp0" ] || fail "ip-up: got session [$v4], want [ppp-4242-ppp0]"
    [ "$v6" = "$v4" ] || fail "ipv6-up: got session [$v6], want ip-up's [$v4]"
    # Without PPPD_PID both fall back to $PPID: one shell runs both, as one
    # pppd would, and says its PID.
    reset
    rc=0
    # shellcheck disable=SC2016  # $1, $2 and $$ are the inner shell's
    /usr/bin/timeout 10 /usr/bin/env -i FLUSHGATE_CLI="$dir/cli" FLUSHGATE_CONFIG="$cfg" \
      FLUSHGATE_IPV6_PREFIXES="$table" FLUSHGATE_LOGGER="$dir/logger" PEERNAME=acme-biz \
      /bin/sh -c '"$1"/ip-up ppp0 /dev/ttyS0 57600 192.0.2.1 192.0.2.77 "" &&
                  "$1"/ipv6-up ppp0 /dev/ttyS0 57600 fe80::1 fe80::2 "" && echo $$ > "$2"' \
      sh "$scripts" "$dir/shell.pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "ip-up; ipv6-up: got exit $rc, want 0"
    wait_log "link up acme-biz 192.0.2.77"
    wait_log "link up acme-biz 2001:db8:0:5600::/56"
    want=ppp-$(cat "$dir/shell.pid")-ppp0
    sessions=$(sed 's/.*--session //' "$calls")
    [ "$sessions" = "$(printf '%s\n' "$want" "$want")" ] ||
      fail "no PPPD_PID: got sessions [$sessions], want [$want] twice"
    ;;
  Ipv6UpIgnoresAnUnlistedPeer)
    printf 'acme-biz 2001:db8:0:5600::/56\n' > "$table"
    run ipv6-up PEERNAME=other PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "-p mail.info nothing known about IPv6 for other on ppp0 (ppp-4242-ppp0)"
    wait_log "RADIUS accounting"
    expect_no_calls
    # No table at all: the same, and nothing on stderr.
    reset
    rm -f "$table"
    run ipv6-up PEERNAME=acme-biz PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "nothing known about IPv6 for acme-biz"
    expect_no_calls
    [ ! -s "$dir/stderr" ] || fail "got stderr [$(cat "$dir/stderr")], want none"
    ;;
  Ipv6UpSkipsCommentsAndBlankLines)
    # Comments, blank lines, tabs, a trailing comment, and a last line
    # without its newline.
    printf '%s\n' '# PEER PREFIX/LEN' '' '   # indented comment' '#acme-biz 2001:db8:dead::/48' \
      '	' 'acme-home	2001:db8:7::/48   # since 2019' > "$table"
    printf '  acme-biz   2001:db8:0:5600::/56' >> "$table"
    run ipv6-up PEERNAME=acme-biz PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "link up acme-biz"
    expect_calls "--config $cfg link up acme-biz --prefix 2001:db8:0:5600::/56 --session ppp-4242-ppp0"
    reset
    run ipv6-up PEERNAME=acme-home PPPD_PID=4243 -- "${v6args[@]}"
    wait_log "link up acme-home"
    expect_calls "--config $cfg link up acme-home --prefix 2001:db8:7::/48 --session ppp-4243-ppp0"
    expect_no_log "warning"
    ;;
  Ipv6UpMatchesTheWholePeerName)
    printf '%s\n' 'acme-biz-2 2001:db8:2::/48' 'acme-biz 2001:db8:1::/48' 'xacme 2001:db8:3::/48' > "$table"
    run ipv6-up PEERNAME=acme-biz PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "link up acme-biz"
    expect_calls "--config $cfg link up acme-biz --prefix 2001:db8:1::/48 --session ppp-4242-ppp0"
    # A name that begins, ends or globs another's is not listed.
    for peer in acme acme-bi 'acme*' 'acme-biz?'; do
      reset
      run ipv6-up PEERNAME="$peer" PPPD_PID=4242 -- "${v6args[@]}"
      wait_log "nothing known about IPv6 for $peer"
      expect_no_calls
    done
    ;;
  Ipv6UpSkipsAMalformedLine)
    printf '%s\n' 'acme-biz' 'acme-biz 2001:db8:1::/48 extra' 'acme-biz 2001:db8:9::' \
      'acme-biz 2001:db8:0:5600::/56' 'acme-biz 2001:db8:2::/48' > "$table"
    run ipv6-up PEERNAME=acme-biz PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "link up acme-biz"
    expect_calls "--config $cfg link up acme-biz --prefix 2001:db8:0:5600::/56 --session ppp-4242-ppp0"
    for n in 1 2 3; do wait_log "mail.warning $table:$n: want"; done
    ;;
  Ipv6DownEndsOnlyTheIpv6Part)
    run ipv6-down PEERNAME=acme-biz PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "link down acme-biz ipv6 (ppp0, ppp-4242-ppp0)"
    expect_calls "--config $cfg link down acme-biz --session ppp-4242-ppp0 --family ipv6"
    ;;
  Ipv6ScriptsNeedAPeerName)
    printf 'acme-biz 2001:db8:0:5600::/56\n' > "$table"
    run ipv6-up PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "-t flushgate-ipv6-up -p mail.warning no peer name/ipparam on ppp0"
    run ipv6-down PPPD_PID=4242 -- "${v6args[@]}"
    wait_log "-t flushgate-ipv6-down -p mail.warning no peer name/ipparam on ppp0"
    expect_no_calls
    ;;
  Ipv6ScriptsReturnBeforeTheCli)
    # The CLI blocks on a FIFO until the scripts have returned: they must
    # not wait for it (pppd does not either).
    printf 'acme-biz 2001:db8:0:5600::/56\n' > "$table"
    mkfifo "$dir/go"
    printf '#!/bin/sh\nread x < %s\nprintf "%%s\\n" "$*" >> %s\n' "$dir/go" "$calls" > "$dir/cli"
    for script in ipv6-up ipv6-down; do
      reset
      run "$script" PEERNAME=acme-biz PPPD_PID=4242 -- "${v6args[@]}"
      [ ! -e "$calls" ] || fail "$script: the CLI finished before the FIFO was written"
      /usr/bin/timeout 5 /bin/sh -c "echo go > '$dir/go'" ||
        fail "$script: got no CLI reading the FIFO within 5 s, want the CLI started in the background"
      wait_log "acme-biz"
      [ -s "$calls" ] || fail "$script: got no CLI call, want one"
    done
    ;;
  ShellcheckClean)
    if ! command -v shellcheck >/dev/null; then
      echo "SKIP: shellcheck is not installed"
      exit 77
    fi
    shellcheck "$scripts"/* "$0" || fail "shellcheck found the problems above"
    ;;
  *)
    echo "unknown case $case_name" >&2
    exit 2
    ;;
esac
[ "$failed" -eq 0 ] && echo "PASS: $case_name"
exit "$failed"
