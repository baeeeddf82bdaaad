#!/usr/bin/env bash
# check_wings.sh — the arrows between gateway's wings run one way:
# inbound → flush → dns, every wing → gateway/'s shared pieces, and the shared
# pieces → no wing. Prints each include that breaks the rule; exit 1 if any.
set -euo pipefail
src=${1:?usage: check_wings.sh SOURCE_DIR}
cd "$src/gateway"
bad=0
check() {  # check DIR_GLOB FORBIDDEN_PATTERN WHY
  local hits
  hits=$(grep -Hn -E "#include \"gateway/($2)/" $1 2>/dev/null || true)
  if [ -n "$hits" ]; then
    echo "$hits" | sed "s|^|gateway/|; s|\$|   <- $3|"
    bad=1
  fi
}
check "flush/*.hpp flush/*.cpp" "inbound" "flush never includes inbound"
check "dns/*.hpp dns/*.cpp" "inbound|flush" "dns includes neither inbound nor flush"
check "*.hpp *.cpp" "inbound|flush|dns" "the shared pieces include no wing"
n=$(ls inbound/*.?pp flush/*.?pp dns/*.?pp | wc -l)
if [ "$bad" -eq 0 ]; then
  echo "gateway wings: $n files checked, every include runs one way"
fi
exit "$bad"
