#!/usr/bin/env bash
# Benchmark smoke for CI: bench/run.sh at toy scale (100 simulated agents, 100 dispatches,
# 5 s idle windows, 100 renewals, one failover, no profiles). It asserts only that every phase ran and
# printed figures, never that a target was met: CI machines are shared and their numbers are
# not comparable.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=$(mktemp -d -p "${TMPDIR:-/tmp}" quorum-bench-smoke.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
FLEET=100 RENEW=100 FAILOVERS=1 DISPATCHES=100 AGENT_IDLE_SECS=5 FLEET_IDLE_SECS=5 PROFILE=0 OUT=$OUT \
  bench/run.sh >"$OUT/table.md" 2>"$OUT/run.log" || {
  tail -40 "$OUT/run.log" >&2
  echo "bench-smoke: bench/run.sh failed" >&2
  exit 1
}
cat "$OUT/table.md"
num='[0-9]+(\.[0-9]+)?'
check() {
  grep -Eq "$1" "$OUT/table.md" || { echo "bench-smoke: the table has no figure for $2" >&2; exit 1; }
}
check "^\| 1 agent \| VmRSS[^|]*\| $num MiB" "the agent's VmRSS"
check "^\| 1 agent \| CPU[^|]*\| $num ms" "the agent's idle CPU"
check "^\| 2 dispatch \| facts task[^|]*\| $num / $num / $num ms" "dispatch latency"
check "^\| 3 fleet N=100 \| coordinator VmRSS[^|]*\| $num MiB" "the coordinator's RSS with 100 agents"
check "^\| 3 fleet N=100 \| time until[^|]*\| $num s" "the fleet's connect time"
check "^\| 3 fleet N=100 \| fan-out[^|]*\| $num / $num / $num ms, 0 errors" "the fan-out"
check "^\| 6 renewal N=100 \| every agent renews once[^|]*\| $num s \($num a second, 64 in flight; 0 errors\)" "the renewal round"
check "^\| 6 renewal N=100 \| deny list[^|]*\| 100 serials" "the deny list after the renewals"
check "^\| 7 failover \(1 rounds\) \| kill -9 of the leader -> next step[^|]*\| $num ms / $num ms" "the failover"
check "^\| 4 SOP \| ratio Σ wall / Σ physical floor \| $num" "the SOP against its physical floor"
echo "bench-smoke: ok in $(($(date +%s) - start)) s"
