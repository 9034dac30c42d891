#!/usr/bin/env bash
# Quorum benchmarks (issue 9). Builds the release binaries, then measures against real
# processes on loopback and prints ONE Markdown table on stdout (progress goes to stderr):
#
#   1. a connected, idle quorum-agent: VmRSS, VmHWM, CPU over AGENT_IDLE_SECS; binary sizes
#   2. dispatch latency: DISPATCHES facts tasks, one at a time, queued -> reported
#   3. fleet scale: for each N in FLEET, N simulated agents (own certificate, own connection,
#      own 127/8 address, one Session stream each as quorum-agent keeps) polling a fresh
#      coordinator: its RSS, idle CPU, the time until all N are connected, and one task
#      fanned out to all N
#   4. SOP overhead: a rolling `quorum config reload --restart` of a real 3-member etcd
#      cluster on 127.0.0.11-13, against its physical floor measured just before on the same
#      fleet (each member restarted by the agents' own restart command, followers first and
#      the leader last, until it serves a linearizable read; summed)
#   5. CPU profiles (perf record) of the coordinator during a fan-out and of the agent during
#      a dispatch loop, from an unstripped build of the same code; reports in bench/out/
#   6. certificate renewal: for each N in RENEW, N simulated agents renew once each, all at
#      once (Renew, then a new connection and session on the new certificate, which revokes
#      the old one): the coordinator's CPU and memory per renewal cycle of the fleet, and the
#      deny list and CRL it leaves
#   7. coordinator failover: two coordinators on a PostgreSQL 15 of its own (default lease,
#      12 s renewed every 3 s) and a real 3-member etcd cluster; FAILOVERS rounds of a rolling
#      reload whose leader is killed (SIGKILL) after three steps: the time from the kill to the
#      standby holding the lease, and to the next step it starts (tests/benches/failover.rs)
#
# Settings (environment):
#   FLEET="1000 5000 10000"  fleet sizes          DISPATCHES=1000   timed round trips
#   AGENT_IDLE_SECS=60       agent idle window    FLEET_IDLE_SECS=30 coordinator idle window
#   PROFILE=1                0 skips step 5       PROFILE_FLEET=2000 fleet size profiled
#   SOP=1                    0 skips step 4       OUT=bench/out     results, logs, profiles
#   SOP_ROUNDS=5             floor + SOP pairs in step 4
#   KEEP=1                   keep the temp dir (configs, logs) instead of removing it
#   PROTOCOL=session         the simulated agents' calls; `unary` plays 0.1 agents (Poll+Report)
#   RENEW="10000"            fleet sizes of step 6 (empty skips it)
#   FAILOVERS=5              rounds of step 7 (0 skips it; needs PostgreSQL 15 and root)
#
# Needs: etcd and start-stop-daemon (Debian's etcd-server, dpkg), perf for step 5
# (linux-perf; skipped with a note when it does not work). Every process it starts is killed
# by pid on exit; all traffic stays on 127.0.0.0/8.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)

FLEET=${FLEET-1000 5000 10000}
RENEW=${RENEW-10000}
FAILOVERS=${FAILOVERS:-5}
PROTOCOL=${PROTOCOL:-session}
DISPATCHES=${DISPATCHES:-1000}
AGENT_IDLE_SECS=${AGENT_IDLE_SECS:-60}
FLEET_IDLE_SECS=${FLEET_IDLE_SECS:-30}
PROFILE=${PROFILE:-1}
PROFILE_FLEET=${PROFILE_FLEET:-2000}
SOP=${SOP:-1}
SOP_ROUNDS=${SOP_ROUNDS:-5}
OUT=${OUT:-$ROOT/bench/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RES=$OUT/results.txt
: >"$RES"

say() { echo "== $*" >&2; }
put() { echo "$1=$2" >>"$RES"; }
die() { echo "bench: $*" >&2; exit 1; }

for tool in etcd start-stop-daemon; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install -y etcd-server (etcd) / dpkg (start-stop-daemon)"
done

# 10,000 agents are 10,000 sockets in the coordinator and as many in the load generator
# (each a process of its own, so each needs the largest N plus some spare).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
biggest=$(printf '%s\n' $FLEET $RENEW "$PROFILE_FLEET" | sort -n | tail -1)
[ "$(ulimit -n)" -ge $((biggest + 1000)) ] \
  || die "open files limit $(ulimit -n) is too low for $biggest agents; raise the hard limit (ulimit -Hn) to $((biggest + 1000))"

say "building release binaries"
cargo build --release --workspace --bins -q
BIN=$ROOT/target/release
Q=$BIN/quorum A=$BIN/quorum-agent L=$BIN/quorum-loadgen

D=$(mktemp -d -p "${TMPDIR:-/tmp}" quorum-bench.XXXXXX)
PIDS=()
cleanup() {
  local p h
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for h in "$D"/hosts/*; do
    [ -f "$h/run/etcd.pid" ] && kill -9 "$(cat "$h/run/etcd.pid")" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $D" >&2; else rm -rf "$D"; fi
}
trap cleanup EXIT
trap "exit 130" INT TERM

# Stops one process we started, by pid, and forgets it.
stop_pid() {
  local pid=$1 p keep=()
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# A port below the ephemeral range (so 10,000 client sockets never take it) that nothing
# listens on at any of the given IPs, nor at port+1.
free_port() {
  local port ip busy
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 10000)) busy=0
    for ip in "$@"; do
      for p in "$port" $((port + 1)); do
        if (exec 3<>"/dev/tcp/$ip/$p") 2>/dev/null; then busy=1; fi
      done
    done
    [ "$busy" = 0 ] && { echo "$port"; return; }
  done
  die "no free port on $*"
}

# ---------------------------------------------------------------- machine and versions
put machine.cores "$(nproc)"
put machine.cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs || echo unknown)"
put machine.mem_gib "$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
put machine.kernel "$(uname -r)"
put machine.load_start "$(cut -d' ' -f1 /proc/loadavg)"
put version.quorum "$($Q --version | awk '{print $2}')"
put version.git "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo +dirty)"
put version.etcd "$(etcd --version | awk '/etcd Version/ {print $3}')"
put version.rustc "$(rustc --version | awk '{print $2}')"
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN {printf "%.2f", b / 1048576}'; }
put bin.quorum_agent_mib "$(mib "$A")"
put bin.quorum_mib "$(mib "$Q")"

# ---------------------------------------------------------------- PKI and processes
say "PKI in $D"
$Q pki init --dir "$D/pki/ca" >/dev/null
$Q pki issue coordinator --ip 127.0.0.1 --dir "$D/pki/ca" --out "$D/coordinator" >/dev/null
$Q pki issue admin --name bench --dir "$D/pki/ca" --out "$D/admin" >/dev/null
CA=$D/pki/ca/ca.crt CAKEY=$D/pki/ca/ca.key ADMIN_CRT=$D/admin/admin.crt ADMIN_KEY=$D/admin/admin.key

# start_coordinator NAME BINARY: a coordinator with its own state dir on a free port; sets
# COORD_PID and COORD_URL, and points the CLI at it.
start_coordinator() {
  local name=$1 bin=$2 port
  port=$(free_port 127.0.0.1)
  cat >"$D/$name.yml" <<EOF
listen: 127.0.0.1:$port
tls: { ca_cert: $CA, cert: $D/coordinator/coordinator.crt, key: $D/coordinator/coordinator.key, ca_key: $CAKEY }
inventory: $D/pigsty.yml
state_dir: $D/$name-state
EOF
  "$bin" serve --config "$D/$name.yml" >"$D/$name.log" 2>&1 &
  COORD_PID=$!
  PIDS+=("$COORD_PID")
  COORD_URL=https://127.0.0.1:$port
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  kill -0 "$COORD_PID" 2>/dev/null || die "coordinator $name did not start: $(cat "$D/$name.log")"
  export QUORUM_COORDINATOR=$COORD_URL QUORUM_CERT=$ADMIN_CRT QUORUM_KEY=$ADMIN_KEY QUORUM_CACERT=$CA
}

# start_agent IP BINARY: an agent for host IP whose exec backend drives a real etcd under
# start-stop-daemon (the layout of scripts/demo); sets AGENT_PID.
start_agent() {
  local ip=$1 bin=$2 H=$D/hosts/$1
  mkdir -p "$H"/{etc/etcd,etc/profile.d,data/etcd,var/lib/quorum,run,log,quorum}
  [ -f "$H/quorum/agent.crt" ] || $Q pki issue agent --ip "$ip" --dir "$D/pki/ca" --out "$H/quorum" >/dev/null
  local PID=$H/run/etcd.pid LOG=$H/log/etcd.log CONF=$H/etc/etcd/etcd.conf
  # The restart command lives in a script that both the agent (exec backend) and the floor
  # measurement of step 4 run, so the two time the very same command. `--exec` on the stop:
  # without it start-stop-daemon waits until the pid leaves /proc, and this machine's PID 1
  # reaps an exited etcd ~1.5 s late (a zombie has no executable, so `--exec` ends the wait
  # when etcd has exited).
  cat >"$H/restart-etcd.sh" <<EOF
start-stop-daemon --stop --oknodo --pidfile $PID --exec /usr/bin/etcd --retry TERM/30/KILL/5 --remove-pidfile && start-stop-daemon --start --background --oknodo --make-pidfile --pidfile $PID --output $LOG --exec /usr/bin/etcd -- --config-file $CONF
EOF
  cat >"$H/quorum/agent.yml" <<EOF
coordinator: $COORD_URL
host_ip: $ip
tls: { ca_cert: $CA, cert: $H/quorum/agent.crt, key: $H/quorum/agent.key }
paths:
  etcd_conf: $CONF
  etcd_ca: $H/etc/etcd/ca.crt
  etcd_cert: $H/etc/etcd/server.crt
  etcd_key: $H/etc/etcd/server.key
  etcdctl_profile: $H/etc/profile.d/etcdctl.sh
  patroni_conf: $H/etc/patroni/patroni.yml
  vip_conf: $H/etc/default/vip-manager.yml
  etcd_data: $H/data/etcd
  journal_dir: $H/var/lib/quorum
allowed_prefixes: [$H]
owners:
  etcd: { user: root, group: root }
  profile: { user: root, group: root }
service_backend: exec
exec:
  etcd:
    start: [start-stop-daemon, --start, --background, --oknodo, --make-pidfile, --pidfile, $PID, --output, $LOG, --exec, /usr/bin/etcd, --, --config-file, $CONF]
    stop: [start-stop-daemon, --stop, --oknodo, --pidfile, $PID, --exec, /usr/bin/etcd, --retry, TERM/30/KILL/5, --remove-pidfile]
    restart: [/bin/sh, $H/restart-etcd.sh]
    status: [/bin/sh, -c, 'p=\$(cat $PID 2>/dev/null) && [ -n "\$p" ] && grep -q "^State:[[:space:]]*[RSDI]" /proc/\$p/status']
EOF
  "$bin" run --config "$H/quorum/agent.yml" >"$H/log/agent.log" 2>&1 &
  AGENT_PID=$!
  PIDS+=("$AGENT_PID")
}

# wait_agents N: until the coordinator lists N agents connected or idle.
wait_agents() {
  for _ in $(seq 150); do
    [ "$($Q agents -o json 2>/dev/null | grep -c '"connected"\|"idle"')" -ge "$1" ] && return
    sleep 0.2
  done
  die "agents did not connect: $($Q agents 2>&1)"
}

ADMIN_ARGS=(--ca-cert "$CA" --admin-cert "$ADMIN_CRT" --admin-key "$ADMIN_KEY")
IPS=(127.0.0.11 127.0.0.12 127.0.0.13)
PORT=$(free_port "${IPS[@]}")
# Pigsty v3.6 (no etcd RBAC), as every earlier figure in BENCHMARKS.md: the restart floor's
# probe reads without a login, and the figures stay comparable from one version to the next.
{
  echo "all:"; echo "  children:"; echo "    etcd:"; echo "      hosts:"
  seq=1
  for ip in "${IPS[@]}"; do
    H=$D/hosts/$ip
    echo "        $ip: { etcd_seq: $seq, etcd_data: $H/data/etcd, quorum_etcd_conf_dir: $H/etc/etcd, quorum_etcdctl_cacert: $H/etc/etcd/ca.crt }"
    seq=$((seq + 1))
  done
  cat <<EOF
      vars:
        version: v3.6.1
        etcd_cluster: etcd
        etcd_port: $PORT
        etcd_peer_port: $((PORT + 1))
        quorum_etcd_listen_localhost: false
        quorum_etcd_client_cert_auth: true
        quorum_etcd_grpc_gateway: true
EOF
} >"$D/pigsty.yml"

# ---------------------------------------------------------------- 1, 2, 4: real agents, real etcd
say "coordinator and 3 agents; etcd cluster create on ${IPS[*]}"
start_coordinator sop "$Q"
AGENTS=()
for ip in "${IPS[@]}"; do start_agent "$ip" "$A"; AGENTS+=("$AGENT_PID"); done
wait_agents 3
$Q cluster create --yes </dev/null >"$D/create.out" 2>&1 || die "cluster create failed: $(cat "$D/create.out")"

say "1. agent ${IPS[0]} connected and idle for $AGENT_IDLE_SECS s"
$L idle --pid "${AGENTS[0]}" --secs "$AGENT_IDLE_SECS" --prefix agent --out "$RES" >&2

say "2. $DISPATCHES facts tasks to ${IPS[0]}, one at a time"
$L dispatch --coordinator "$COORD_URL" "${ADMIN_ARGS[@]}" --agent "${IPS[0]}" \
  --count "$DISPATCHES" --out "$RES" >&2
say "2. $DISPATCHES facts tasks to a simulated agent (the coordinator's and the wire's share)"
$L dispatch --coordinator "$COORD_URL" "${ADMIN_ARGS[@]}" --agent 127.3.0.1 \
  --simulate-with-ca-key "$CAKEY" --count "$DISPATCHES" --prefix dispatch_sim --out "$RES" >&2

if [ "$SOP" = 1 ]; then
  # etcd's own stop takes either a few ms or about a second (its HTTP/2 shutdown), whoever
  # stops it, so one roll against one floor is mostly noise: SOP_ROUNDS alternating pairs,
  # compared as sums.
  MEMBERS=()
  for ip in "${IPS[@]}"; do MEMBERS+=(--member "$ip,https://$ip:$PORT,$D/hosts/$ip/restart-etcd.sh"); done
  result() { awk -F= -v k="$1" '$1 == k {v = $2} END {print v}' "$RES"; }
  wall_total=0 floor_total=0 restart_total=0 commands_total=0
  for r in $(seq "$SOP_ROUNDS"); do
    say "4. round $r/$SOP_ROUNDS: physical floor (own restart command, leader last)"
    $L floor "${MEMBERS[@]}" --ca-cert "$CA" --cert "$D/coordinator/coordinator.crt" \
      --key "$D/coordinator/coordinator.key" --prefix "sop.floor.r$r" --out "$RES" >&2
    floor_ms=$(result "sop.floor.r${r}_ms")
    say "4. round $r/$SOP_ROUNDS: quorum config reload --restart (quorum-guarded, leader last)"
    t0=$(date +%s%N)
    $Q config reload --restart -o json </dev/null >"$OUT/sop-run-$r.json" 2>"$OUT/sop-run-$r.log" \
      || die "config reload failed: $(cat "$OUT/sop-run-$r.log")"
    t1=$(date +%s%N)
    wall_ms=$(((t1 - t0) / 1000000))
    $L sop --run-json "$OUT/sop-run-$r.json" --wall-ms "$wall_ms" --floor-ms "$floor_ms" \
      --round "$r" --out "$RES" >&2
    wall_total=$((wall_total + wall_ms)) floor_total=$((floor_total + floor_ms))
    restart_total=$((restart_total + $(result "sop.r$r.restart_ms")))
    commands_total=$((commands_total + $(result "sop.floor.r$r.commands_ms")))
  done
  put sop.rounds "$SOP_ROUNDS"
  put sop.wall_total_s "$(awk -v w="$wall_total" 'BEGIN {printf "%.2f", w / 1000}')"
  put sop.floor_total_s "$(awk -v f="$floor_total" 'BEGIN {printf "%.2f", f / 1000}')"
  put sop.floor_ratio "$(awk -v w="$wall_total" -v f="$floor_total" 'BEGIN {printf "%.3f", w / f}')"
  # Without the restart commands (etcd's own stop, random in length): what is left of the
  # SOP (dispatch, guards, writes, leadership move, gates, CLI) against what is left of the
  # floor (each member from its start to serving).
  put sop.restarts_total_s "$(awk -v a="$restart_total" -v b="$commands_total" 'BEGIN {printf "%.2f / %.2f", a / 1000, b / 1000}')"
  put sop.rest_ratio "$(awk -v w="$((wall_total - restart_total))" -v f="$((floor_total - commands_total))" 'BEGIN {printf "%.3f (%.2f s / %.2f s)", w / f, w / 1000, f / 1000}')"
fi
for p in "${AGENTS[@]}"; do stop_pid "$p"; done
stop_pid "$COORD_PID"
for ip in "${IPS[@]}"; do
  f=$D/hosts/$ip/run/etcd.pid
  if [ -f "$f" ]; then kill -9 "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; fi
done

# ---------------------------------------------------------------- 3: fleets
put fleet.list "$FLEET"
for n in $FLEET; do
  say "3. fleet of $n simulated agents against a fresh coordinator"
  start_coordinator "fleet-$n" "$Q"
  $L fleet --coordinator "$COORD_URL" "${ADMIN_ARGS[@]}" --ca-key "$CAKEY" --agents "$n" \
    --coordinator-pid "$COORD_PID" --idle-secs "$FLEET_IDLE_SECS" --protocol "$PROTOCOL" \
    --out "$RES" >&2
  stop_pid "$COORD_PID"
done

# ---------------------------------------------------------------- 6: renewals
put renew.list "$RENEW"
for n in $RENEW; do
  say "6. $n simulated agents renew their certificates once, against a fresh coordinator"
  start_coordinator "renew-$n" "$Q"
  $L renew --coordinator "$COORD_URL" "${ADMIN_ARGS[@]}" --ca-key "$CAKEY" --agents "$n" \
    --coordinator-pid "$COORD_PID" --state-dir "$D/renew-$n-state" --out "$RES" >&2
  stop_pid "$COORD_PID"
done

# ---------------------------------------------------------------- 7: failover
if [ "$FAILOVERS" -gt 0 ]; then
  say "7. $FAILOVERS failovers of the leader during a rolling reload (two coordinators on PostgreSQL 15)"
  # The harness drives processes and only waits; the dev profile shares the test suites'
  # build. What it measures runs the release binaries.
  QUORUM_BIN_DIR=$ROOT/target/release cargo bench -q --profile dev -p quorum-tests --bench failover -- \
    --rounds "$FAILOVERS" --out "$RES" >&2
fi

# ---------------------------------------------------------------- 5: profiles
# top_frames FILE PID: the three hottest functions of process PID by self time.
top_frames() {
  perf report -i "$1" --pid "$2" --no-children --sort sym -g none --stdio 2>/dev/null \
    | awk 'n < 3 && /^ +[0-9.]+%/ {pct=$1; $1=""; $2=""; sub(/^ +/, ""); s=$0; if (length(s) > 60) s=substr(s, 1, 57) "..."; printf "%s%s %s", (n++ ? "; " : ""), s, pct}'
}
# report FILE PID: flat (self) and caller-tree reports of process PID next to the data file.
report() {
  perf report -i "$1" --pid "$2" --no-children --sort dso,sym -g none --stdio \
    >"${1%.perf.data}.self.txt" 2>/dev/null || true
  perf report -i "$1" --pid "$2" --children --sort sym -g caller,0.5,callee,function,percent \
    --percent-limit 3 --stdio >"${1%.perf.data}.tree.txt" 2>/dev/null || true
  perf report -i "$1" --no-children --sort comm -g none --stdio >"${1%.perf.data}.comm.txt" 2>/dev/null || true
}
perf_works() { command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; }
if [ "$PROFILE" = 1 ] && ! perf_works && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing linux-perf for the profiles"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null 2>&1 || true
fi
if [ "$PROFILE" = 1 ] && perf_works; then
  say "5. profiles: unstripped build of the same code (profile benchprof = release + symbols)"
  CARGO_PROFILE_BENCHPROF_INHERITS=release CARGO_PROFILE_BENCHPROF_STRIP=false \
    CARGO_PROFILE_BENCHPROF_DEBUG=false \
    cargo build --profile benchprof -p quorum-coordinator -p quorum-agent --bins -q
  PQ=$ROOT/target/benchprof/quorum PA=$ROOT/target/benchprof/quorum-agent
  rm -f "$OUT"/*.perf.data "$OUT"/*.perf.data.old
  start_coordinator profile "$PQ"
  start_agent 127.0.0.21 "$PA"
  PAGENT=$AGENT_PID
  wait_agents 1
  say "5. agent and coordinator during $((DISPATCHES / 2)) dispatches"
  $L dispatch --coordinator "$COORD_URL" "${ADMIN_ARGS[@]}" --agent 127.0.0.21 \
    --count $((DISPATCHES / 2)) --prefix profile.dispatch \
    --perf "$PAGENT=$OUT/agent-dispatch.perf.data" \
    --perf "$COORD_PID=$OUT/coordinator-dispatch.perf.data" --out "$RES" >&2
  say "5. coordinator with $PROFILE_FLEET agents idle, then during 10 fan-outs to all of them"
  $L fleet --coordinator "$COORD_URL" "${ADMIN_ARGS[@]}" --ca-key "$CAKEY" --agents "$PROFILE_FLEET" \
    --coordinator-pid "$COORD_PID" --idle-secs 15 --fanout-rounds 10 --prefix profile.fleet \
    --ip-base 127.2.0.1 --perf "$COORD_PID=$OUT/coordinator-fanout.perf.data" \
    --perf-idle "$COORD_PID=$OUT/coordinator-idle.perf.data" --out "$RES" >&2
  say "5. perf reports"
  report "$OUT/coordinator-fanout.perf.data" "$COORD_PID"
  report "$OUT/coordinator-idle.perf.data" "$COORD_PID"
  report "$OUT/coordinator-dispatch.perf.data" "$COORD_PID"
  report "$OUT/agent-dispatch.perf.data" "$PAGENT"
  put profile.coordinator_top "$(top_frames "$OUT/coordinator-fanout.perf.data" "$COORD_PID")"
  idle_top=$(top_frames "$OUT/coordinator-idle.perf.data" "$COORD_PID")
  # An empty report means perf sampled nothing: no poll hold ran out in the 15 s window.
  put profile.coordinator_idle_top "${idle_top:-no samples at 999 Hz: the coordinator was idle}"
  put profile.agent_top "$(top_frames "$OUT/agent-dispatch.perf.data" "$PAGENT")"
  put profile.agent_children_pct "$(awk '/^ +[0-9.]+%/ && $2 != "quorum-agent" && $2 != "tokio-rt-worker" {s += $1} END {printf "%.0f", s}' "$OUT/agent-dispatch.comm.txt")"
  stop_pid "$PAGENT"
  stop_pid "$COORD_PID"
elif [ "$PROFILE" = 1 ]; then
  put profile.coordinator_top "skipped: perf does not work here"
else
  put profile.coordinator_top "skipped (PROFILE=0)"
fi

put machine.load_end "$(cut -d' ' -f1 /proc/loadavg)"
put run.total_s $(($(date +%s) - START))
$L table --results "$RES" | tee "$OUT/table.md"
