#!/usr/bin/env bash
# completion_test.sh — scripts/completion/flushgate under bash-completion:
# what TAB offers after a partial command line. Customer names come from a
# fake `flushgate customer list` on PATH (the real one needs a daemon).
# Exit 77 (skip) without the bash-completion package.
set -u
src=$1
main=/usr/share/bash-completion/bash_completion
[ -r "$main" ] || { echo "skip: bash-completion not installed"; exit 77; }
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
cat >"$fake/flushgate" <<'FAKE'
#!/bin/sh
[ "$*" = "customer list" ] || exit 2
printf 'NAME   STATE    MODE\nacme   enabled  hold\nbravo  enabled  relay\n'
FAKE
chmod +x "$fake/flushgate"

PATH="$fake:$PATH" bash --norc --noprofile -c '
source "$1"
source "$2/scripts/completion/flushgate"
failures=0
expect() {   # expect "WANT" WORD...  (the last word is the one being completed)
  local want=$1
  shift
  COMP_WORDS=("$@")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  _flushgate
  if [ "${COMPREPLY[*]}" != "$want" ]; then
    echo "FAIL [$*]: got \"${COMPREPLY[*]}\", want \"$want\""
    failures=$((failures + 1))
  fi
}
expect "customer" flushgate cu
expect "suspend" flushgate customer su
expect "acme bravo" flushgate customer suspend ""
expect "bravo" flushgate flush b
expect "--customer" flushgate --json queue list --cu
expect "relay hold odmr" flushgate customer add x --mode ""
expect "up down list" flushgate --config /etc/x.cf link ""
expect "--wait --timeout" flushgate flush acme --
exit $((failures > 0))
' completion_test "$main" "$src"
