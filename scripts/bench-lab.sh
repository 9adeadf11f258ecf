#!/usr/bin/env bash
# Benchmark of the lab and the node datapath: prints figures, asserts nothing (issue 3,
# "Performance"). Sections, all by default:
#   up        `lab up --nodes 3` / `lab down`, UP_RUNS times: median, min, max
#   up-security  `lab up --nodes 3` before and after the API's TLS, tokens and RBAC (issue 11):
#             `--insecure-api` (the API as before: plain HTTP, no RBAC) against the default,
#             same binary, UP_RUNS runs each, alternating
#   apply     `apply -f <REPLICAS-replica Deployment> --wait` until it returns, APPLY_RUNS times
#             (delete and wait for the pods to be gone in between), then the agents' resident
#             memory (VmRSS, VmHWM) at idle with 3 nodes and REPLICAS pods
#   datapath  cross-node pod-to-pod TCP throughput (iperf3) and request/response rate, for the
#             vxlan and the host-gw backend, each side by side with the same path built by hand
#             without sarasa (bench/handbuilt.sh), runs interleaved so machine noise hits both
#   handbuilt the hand-built half of `datapath` alone (needs no sarasa lab)
#
#   scripts/bench-lab.sh [--no-build] [up] [up-security] [apply] [datapath] [handbuilt]
#
# SARASA_BIN=path/to/sarasa runs another build (sarasa-cni next to it), e.g. the static one of
# scripts/build-image.sh. Knobs (environment): UP_RUNS=5 APPLY_RUNS=3 REPLICAS=100 REPS=5 IPERF_SECS=5 RR_SECS=5
# RR_TOOL=auto|sockperf|rr.py (auto: sockperf from Debian, installed if missing; else bench/rr.py).
# Uses the lab named `bench` (BENCH_LAB) and namespaces sarasa-hb-*; removes everything it made
# on exit, also on failure or Ctrl-C. The root network namespace is never touched.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# The whole run is bounded: past WATCHDOG_SECS `timeout` sends SIGTERM and the trap cleans up.
if [ -z "${SARASA_BENCH_INNER:-}" ]; then
  SARASA_BENCH_INNER=1 exec timeout -k 180 "${WATCHDOG_SECS:-1200}" "$0" "$@"
fi
ROOT=$PWD

LAB=${BENCH_LAB:-bench}
UP_RUNS=${UP_RUNS:-5}
APPLY_RUNS=${APPLY_RUNS:-3}
REPLICAS=${REPLICAS:-100}
REPS=${REPS:-5}
IPERF_SECS=${IPERF_SECS:-5}
RR_SECS=${RR_SECS:-5}
RR_TOOL=${RR_TOOL:-auto}
WATCHDOG_SECS=${WATCHDOG_SECS:-1200}
PY=${PYTHON:-python3}
SARASA=${SARASA_BIN:-$ROOT/target/release/sarasa}
HB=$ROOT/bench/handbuilt.sh
RR=$ROOT/bench/rr.py
IPERF_PORT=5201
RR_PORT=11111

build=1
sections=()
for a in "$@"; do
  case $a in
    --no-build) build=0 ;;
    up | up-security | apply | datapath | handbuilt) sections+=("$a") ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-lab: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#sections[@]} -gt 0 ] || sections=(up up-security apply datapath)
want() { local s; for s in "${sections[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

# ---------------------------------------------------------------- cleanup (always runs)
WORK=$(mktemp -d /tmp/sarasa-bench.XXXXXX)
BG_PIDS=()      # background `sarasa exec` / `ip netns exec` processes we started

stop_pidfile() { # kill the process a pidfile names, if it is still one of ours
  local f=$1 pid
  [ -s "$f" ] || return 0
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  case $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) in
    *iperf3* | *sockperf* | *rr.py*) kill "$pid" 2>/dev/null || true ;;
  esac
  rm -f "$f"
}

lab_is_up() { [ -e "/var/lib/sarasa/$LAB/lab.json" ]; }

cleanup() {
  local rc=$? f p
  trap - EXIT INT TERM
  for f in "$WORK"/*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$HB" down || true
  if lab_is_up && [ -x "$SARASA" ]; then
    timeout 120 "$SARASA" --lab "$LAB" lab down >/dev/null || echo "bench: lab down failed" >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM


# ---------------------------------------------------------------- helpers
S() { timeout "${T:-120}" "$SARASA" --lab "$LAB" "$@"; }
now() { date +%s.%N; }
elapsed() { "$PY" -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$1" "$2"; }
# stats N... -> "median min max" (2 decimals unless the values are large)
stats() {
  "$PY" - "$@" <<'EOF'
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
fmt = (lambda x: f"{x:.0f}") if max(v) >= 1000 else (lambda x: f"{x:.2f}")
print(fmt(statistics.median(v)), fmt(min(v)), fmt(max(v)))
EOF
}
median() { stats "$@" | cut -d' ' -f1; }
kib_to_mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { "$PY" -c 'import sys; a,b=map(float,sys.argv[1:]); print(f"{a/b:.2f}" if b else "n/a")' "$1" "$2"; }

# poll DESC TIMEOUT_S CMD...: run CMD every 0.2 s until it succeeds, at most TIMEOUT_S seconds.
poll() {
  local desc=$1 limit=$2 deadline
  shift 2
  deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "bench: timed out after ${limit}s waiting for $desc" >&2
      return 1
    fi
    sleep 0.2
  done
}

machine() {
  echo "== machine"
  echo "cpus:    $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'))"
  echo "kernel:  $(uname -r)"
  echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; other work on the machine skews figures)"
  echo "sarasa:  $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty') $SARASA"
  echo
}

pick_rr_tool() {
  if [ "$RR_TOOL" = auto ] || [ "$RR_TOOL" = sockperf ]; then
    if ! command -v sockperf >/dev/null; then
      echo "installing sockperf (Debian) for the request/response test" >&2
      DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends \
        sockperf >/dev/null 2>&1 || true
    fi
    if command -v sockperf >/dev/null; then RR_TOOL=sockperf; return; fi
    [ "$RR_TOOL" = sockperf ] && { echo "bench: sockperf is not available" >&2; exit 1; }
  fi
  RR_TOOL=rr.py
}

# ---------------------------------------------------------------- 1. lab bring-up
bench_up() {
  echo "== lab up --nodes 3 / lab down, $UP_RUNS runs"
  local i t0 t1 t2 ups=() downs=()
  for i in $(seq 1 "$UP_RUNS"); do
    t0=$(now)
    T=120 S lab up --nodes 3 --timeout 60s >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; return 1; }
    t1=$(now)
    T=120 S lab down >/dev/null
    t2=$(now)
    ups+=("$(elapsed "$t0" "$t1")")
    downs+=("$(elapsed "$t1" "$t2")")
    echo "run $i: up ${ups[-1]} s, down ${downs[-1]} s"
  done
  read -r m lo hi <<<"$(stats "${ups[@]}")"
  echo "RESULT lab up (3 nodes):   median $m s (min $lo, max $hi) over $UP_RUNS runs   [target < 3 s]"
  read -r m lo hi <<<"$(stats "${downs[@]}")"
  echo "RESULT lab down:           median $m s (min $lo, max $hi)"
  echo
}

# ---------------------------------------------------------------- 1b. bring-up before/after security
# One binary, both sides: `lab up --insecure-api` serves the API as before issue 11 (plain HTTP,
# requests without credentials accepted, authorization AlwaysAllow; agents and DNS told the
# http:// URL), everything else — the DaemonSet install, the DNS add-on — identical.
bench_up_security() {
  local i side t0 t1 before=() after=() flags
  echo "== lab up --nodes 3 before (--insecure-api: plain HTTP, no tokens checked, no RBAC) and after (TLS, tokens, RBAC), $UP_RUNS runs each"
  for i in $(seq 1 "$UP_RUNS"); do
    # Alternate which goes first so drift on a shared machine hits both alike.
    for side in $( ((i % 2)) && echo "before after" || echo "after before"); do
      flags=()
      [ "$side" = before ] && flags=(--insecure-api)
      t0=$(now)
      T=120 S lab up --nodes 3 --timeout 60s "${flags[@]}" >"$WORK/up.log" 2>&1 \
        || { cat "$WORK/up.log" >&2; return 1; }
      t1=$(now)
      T=120 S lab down >/dev/null
      if [ "$side" = before ]; then before+=("$(elapsed "$t0" "$t1")"); else after+=("$(elapsed "$t0" "$t1")"); fi
      echo "run $i $side: up $(elapsed "$t0" "$t1") s"
    done
  done
  local mb ma
  mb=$(median "${before[@]}")
  ma=$(median "${after[@]}")
  echo "RESULT lab up before security: median $mb s; after (TLS, tokens, RBAC): median $ma s; after/before $(ratio "$ma" "$mb")   [target <= 1.20]"
  echo
}

# ---------------------------------------------------------------- 2+3. apply 100 pods, agent memory
deployment_yaml() {
  cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bench-apply
spec:
  replicas: $REPLICAS
  selector:
    matchLabels:
      app: bench-apply
  template:
    metadata:
      labels:
        app: bench-apply
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - containerPort: 80
EOF
}

# count_pods LABEL_VALUE -> number of pods with app=LABEL_VALUE (any phase)
count_pods() {
  S get pods -o json | "$PY" -c '
import json, sys
items = json.load(sys.stdin).get("items") or []
print(sum(1 for p in items if (p["metadata"].get("labels") or {}).get("app") == sys.argv[1]))' "$1"
}
no_pods_left() {
  [ "$(count_pods bench-apply)" = 0 ] && ! ip netns list | grep -q "^sarasa-$LAB-p-"
}

agent_memory() {
  local f pid start node rss hwm real_start
  printf '%-8s %-8s %12s %12s\n' NODE PID VmRSS VmHWM
  local rows=0
  # The agents are the sarasa-agent DaemonSet's pods: the kubelet's records under pods/.
  while read -r node pid start; do
    # The record's start_time guards against a recycled pid (field 22 of /proc/PID/stat).
    real_start=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20 || true)
    if [ -z "$real_start" ] || { [ -n "$start" ] && [ "$start" != "$real_start" ]; }; then
      echo "bench: agent of $node (pid $pid) is not running" >&2
      continue
    fi
    case $(tr '\0' ' ' <"/proc/$pid/cmdline") in
      *" agent"*) ;;
      *) echo "bench: pid $pid of $node is not a sarasa agent: $(tr '\0' ' ' <"/proc/$pid/cmdline")" >&2 ;;
    esac
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    printf '%-8s %-8s %9.1f MB %9.1f MB\n' "$node" "$pid" "$(kib_to_mb "$rss")" "$(kib_to_mb "$hwm")"
    echo "$rss" >>"$WORK/rss"
    rows=$((rows + 1))
  done < <("$PY" - /var/lib/sarasa/"$LAB"/pods <<'PYEOF'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    r = json.load(open(f))
    if r.get("namespace") != "sarasa-system" or not r.get("name", "").startswith("sarasa-agent-"):
        continue
    for c in r.get("containers", []):
        if c.get("name") == "agent" and c.get("process"):
            print(r["node"], c["process"]["pid"], c["process"].get("start_time", ""))
PYEOF
)
  [ "$rows" -gt 0 ] || { echo "bench: found no running agent pod under /var/lib/sarasa/$LAB/pods" >&2; return 1; }
}

bench_apply() {
  echo "== apply -f <$REPLICAS-replica Deployment> --wait, $APPLY_RUNS runs (3 nodes, vxlan)"
  deployment_yaml >"$WORK/deploy.yaml"
  T=120 S lab up --nodes 3 --timeout 60s >/dev/null
  local i t0 t1 times=()
  for i in $(seq 1 "$APPLY_RUNS"); do
    t0=$(now)
    T=300 S apply -f "$WORK/deploy.yaml" --wait --timeout 240s >/dev/null
    t1=$(now)
    times+=("$(elapsed "$t0" "$t1")")
    echo "run $i: ${times[-1]} s ($(count_pods bench-apply) pods)"
    if [ "$i" -lt "$APPLY_RUNS" ]; then
      S delete -f "$WORK/deploy.yaml" >/dev/null
      poll "the $REPLICAS pods to be gone" 240 no_pods_left
    fi
  done
  read -r m lo hi <<<"$(stats "${times[@]}")"
  echo "RESULT apply $REPLICAS pods --wait: median $m s (min $lo, max $hi) over $APPLY_RUNS runs   [target < 10 s]"
  echo

  echo "== agent resident memory at idle: 3 nodes, $REPLICAS pods (after 10 s idle)"
  sleep 10 # "idle" means after the apply settled; this is a measurement delay, not a readiness wait
  rm -f "$WORK/rss"
  agent_memory
  local max
  max=$(sort -n "$WORK/rss" | tail -1)
  echo "RESULT agent VmRSS at idle: max $(kib_to_mb "$max") MB over $(wc -l <"$WORK/rss") agents   [target < 30 MB]"
  echo
  S delete -f "$WORK/deploy.yaml" >/dev/null
  poll "the $REPLICAS pods to be gone" 240 no_pods_left
  T=120 S lab down >/dev/null
}

# ---------------------------------------------------------------- 4. datapath
# A "path" is sarasa or hb. inpod PATH client|server CMD...: run CMD in that pod's namespace.
inpod() {
  local path=$1 role=$2
  shift 2
  if [ "$path" = sarasa ]; then
    S exec "bench-$role" -- "$@"
  else
    local n=1
    [ "$role" = server ] && n=2
    timeout "${T:-120}" ip netns exec "sarasa-hb-pod-$n" "$@"
  fi
}

pods_yaml() {
  local role node
  for role in client:node-1 server:node-2; do
    node=${role#*:}; role=${role%%:*}
    cat <<EOF
---
apiVersion: v1
kind: Pod
metadata:
  name: bench-$role
  labels:
    app: bench-datapath
spec:
  nodeName: $node
  containers:
  - name: idle
    image: busybox
    command: ["sleep", "infinity"]
EOF
  done
}

# sarasa_server_ip: the server pod's IP (and checks that the two pods sit on different nodes)
sarasa_server_ip() {
  S get pods -o json | "$PY" -c '
import json, sys
pods = {p["metadata"]["name"]: p for p in json.load(sys.stdin)["items"]}
c, s = pods["bench-client"], pods["bench-server"]
if c["spec"].get("nodeName") == s["spec"].get("nodeName"):
    sys.exit("bench: client and server pods are on the same node")
print(s["status"]["podIP"])'
}

listening() { # listening PATH PORT
  inpod "$1" server ss -Hltn "sport = :$2" | grep -q LISTEN
}

start_servers() { # start_servers PATH: iperf3 and the RR server in the server pod
  local path=$1
  inpod "$path" server iperf3 -s -D -p "$IPERF_PORT" -I "$WORK/$path-iperf.pid" >/dev/null
  poll "iperf3 server ($path)" 15 listening "$path" "$IPERF_PORT"
  if [ "$RR_TOOL" = sockperf ]; then
    # sockperf has no pidfile: the shell records its pid and becomes `timeout sockperf`.
    T=$((WATCHDOG_SECS + 60)) inpod "$path" server sh -c 'echo $$ >"$1"; exec timeout 1800 sockperf server --tcp -p "$2" >/dev/null 2>&1' \
      sh "$WORK/$path-rr.pid" "$RR_PORT" >/dev/null 2>&1 &
    BG_PIDS+=($!)
  else
    inpod "$path" server "$PY" "$RR" server --port "$RR_PORT" --daemon --pidfile "$WORK/$path-rr.pid" --lifetime 1800
  fi
  poll "request/response server ($path)" 15 listening "$path" "$RR_PORT"
}

stop_servers() {
  stop_pidfile "$WORK/$1-iperf.pid"
  stop_pidfile "$WORK/$1-rr.pid"
}

measure_iperf() { # measure_iperf PATH SERVER_IP -> Gbit/s
  T=$((IPERF_SECS + 30)) inpod "$1" client iperf3 -c "$2" -p "$IPERF_PORT" -t "$IPERF_SECS" -J \
    --connect-timeout 5000 >"$WORK/iperf.json"
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))' "$WORK/iperf.json"
}

measure_rr() { # measure_rr PATH SERVER_IP -> transactions/s
  if [ "$RR_TOOL" = sockperf ]; then
    # One 14-byte (sockperf's minimum) message in flight; rate = replies / valid run time.
    T=$((RR_SECS + 30)) inpod "$1" client sockperf ping-pong --tcp -i "$2" -p "$RR_PORT" -t "$RR_SECS" -m 14 \
      >"$WORK/rr.out" 2>&1
    "$PY" -c '
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"RunTime=([\d.]+) sec; SentMessages=\d+; ReceivedMessages=(\d+)", t)
if not m:
    sys.exit("bench: cannot parse sockperf output:\n" + t)
print(f"{int(m.group(2)) / float(m.group(1)):.0f}")' "$WORK/rr.out"
  else
    T=$((RR_SECS + 30)) inpod "$1" client "$PY" "$RR" client --host "$2" --port "$RR_PORT" --duration "$RR_SECS" \
      >"$WORK/rr.out"
    "$PY" -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["rate"])' "$WORK/rr.out"
  fi
}

# datapath_backend BACKEND WITH_SARASA(0|1): measure, interleaved, and print the rows
datapath_backend() {
  local backend=$1 with_sarasa=$2 paths=(hb) ip_sarasa= ip_hb=10.77.2.2 i path ip g r
  echo "-- backend $backend"
  "$HB" up "$backend"
  poll "the hand-built $backend path" 20 "$HB" check
  if [ "$with_sarasa" = 1 ]; then
    T=120 S lab up --nodes 3 --backend "$backend" --timeout 60s >/dev/null
    pods_yaml >"$WORK/pods.yaml"
    T=150 S apply -f "$WORK/pods.yaml" --wait --timeout 120s >/dev/null
    ip_sarasa=$(sarasa_server_ip)
    paths=(sarasa hb)
  fi
  for path in "${paths[@]}"; do start_servers "$path"; done
  declare -A gbit=() rr=()
  for i in $(seq 1 "$REPS"); do
    for path in "${paths[@]}"; do
      ip=$ip_hb; [ "$path" = sarasa ] && ip=$ip_sarasa
      g=$(measure_iperf "$path" "$ip")
      r=$(measure_rr "$path" "$ip")
      gbit[$path]="${gbit[$path]:-} $g"
      rr[$path]="${rr[$path]:-} $r"
      echo "rep $i $(printf '%-10s' "$path") $g Gbit/s  $r tx/s"
    done
  done
  for path in "${paths[@]}"; do stop_servers "$path"; done
  for path in "${paths[@]}"; do
    # shellcheck disable=SC2086 # word splitting of the sample lists is intended
    echo "$backend $path $(stats ${gbit[$path]}) $(stats ${rr[$path]})" >>"$WORK/table"
  done
  "$HB" down
  if [ "$with_sarasa" = 1 ]; then T=120 S lab down >/dev/null; fi
}

bench_datapath() {
  local with_sarasa=$1
  pick_rr_tool
  echo "== cross-node pod-to-pod datapath: iperf3 ${IPERF_SECS}s, $RR_TOOL request/response ${RR_SECS}s, $REPS reps each, interleaved"
  rm -f "$WORK/table"
  datapath_backend vxlan "$with_sarasa"
  datapath_backend host-gw "$with_sarasa"
  echo
  printf 'RESULT %-20s %24s %26s\n' "path" "Gbit/s median (min-max)" "RR tx/s median (min-max)"
  local b p g glo ghi r rlo rhi sg sr
  while read -r b p g glo ghi r rlo rhi; do
    printf 'RESULT %-20s %24s %26s\n' "$b $( [ "$p" = hb ] && echo hand-built || echo sarasa)" \
      "$g ($glo-$ghi)" "$r ($rlo-$rhi)"
    if [ "$p" = hb ] && [ "$with_sarasa" = 1 ]; then
      read -r _ _ sg _ _ sr _ _ < <(grep "^$b sarasa " "$WORK/table")
      printf 'RESULT %-20s %24s %26s   [target >= 0.90]\n' "$b sarasa/hand" "$(ratio "$sg" "$g")" "$(ratio "$sr" "$r")"
    fi
  done <"$WORK/table"
  echo
}

# ---------------------------------------------------------------- main
need_sarasa=0
for s in "${sections[@]}"; do [ "$s" != handbuilt ] && need_sarasa=1; done
./scripts/install-deps.sh
if [ "$need_sarasa" = 1 ] && [ "$build" = 1 ]; then cargo build --release --bins; fi
machine
"$HB" down
if [ "$need_sarasa" = 1 ]; then
  [ -x "$SARASA" ] || { echo "bench: $SARASA is missing (cargo build --release --bins)" >&2; exit 1; }
  if lab_is_up; then
    echo "bench: a lab named '$LAB' is up (left over?): taking it down first" >&2
    T=120 S lab down >/dev/null
  fi
fi
start=$(date +%s)
# (`if`, not `&&`: bash ignores `set -e` inside a function called from an && list)
if want up; then bench_up; fi
if want up-security; then bench_up_security; fi
if want apply; then bench_apply; fi
if want datapath; then
  bench_datapath 1
elif want handbuilt; then
  bench_datapath 0
fi
echo "== done in $(($(date +%s) - start)) s"
