# shellcheck shell=bash
# The staging flow on the example app in the sandbox, of the staging-flow issue: sourced by
# run.sh, whose helpers (result, target, error, section, spread) and state (BIN, WORK, REPEAT,
# ROOT) it uses. Each run is `stagehost run scripts/staging.lua --sandbox --auto-approve` in a
# fresh state directory: four checks at once, the approval, packaging, a stack wait, the
# Amplify job, the integration tests. Sampled from /proc every 20 ms while it runs:
#   host overhead = the host process's own CPU time (utime + stime, not its children's): all
#     the time the host itself spent, engine, state, HTTP and the emulator included; wall time
#     minus the commands' time would count the parallel checks' overlap, this does not
#   peak RSS      = the host's VmHWM (the emulator runs inside it, so it is counted too)

FLOW_RUNS=${BENCH_FLOW_RUNS:-$REPEAT}

bench_flow() {
  local b=flow i pid state rc cpu hwm wall t0 clk
  section "11. the staging flow on examples/webapp in the sandbox (median of $FLOW_RUNS)"
  clk=$(getconf CLK_TCK)
  # the app's packages once, outside the measure (a fresh clone's first run installs them)
  if [[ ! -d $ROOT/examples/webapp/node_modules ]]; then
    (cd "$ROOT/examples/webapp" && npm ci --no-audit --no-fund >/dev/null 2>&1) || {
      error $b "npm ci in examples/webapp failed"
      return
    }
  fi
  : >"$WORK/flow.cpu"; : >"$WORK/flow.hwm"; : >"$WORK/flow.wall"
  for ((i = 1; i <= FLOW_RUNS; i++)); do
    state=$WORK/flow-state-$i
    t0=$EPOCHREALTIME
    "$BIN" run "$ROOT/scripts/staging.lua" --sandbox --auto-approve --state "$state" >"$WORK/last.out" 2>"$WORK/last.err" &
    pid=$!
    cpu=0 hwm=0
    while kill -0 "$pid" 2>/dev/null; do
      local stat status
      stat=$(cat "/proc/$pid/stat" 2>/dev/null) || break
      status=$(cat "/proc/$pid/status" 2>/dev/null) || break
      [[ $stat == *") Z "* ]] && break
      cpu=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' <<<"$stat")
      hwm=$(awk '/^VmHWM:/ { print $2 }' <<<"$status")
      sleep 0.02
    done
    rc=0
    wait "$pid" || rc=$?
    wall=$(calc "$EPOCHREALTIME - $t0")
    if [[ $rc != 0 ]]; then
      error $b "the staging flow failed (exit $rc)" "$WORK/last.out"
      return
    fi
    calc "$cpu / $clk" >>"$WORK/flow.cpu"; echo >>"$WORK/flow.cpu"
    echo "$hwm" >>"$WORK/flow.hwm"
    echo "$wall" >>"$WORK/flow.wall"
  done
  local cmed cmin cmax hmed hmin hmax wmed wmin wmax
  read -r cmed cmin cmax < <(spread "$WORK/flow.cpu")
  read -r hmed hmin hmax < <(spread "$WORK/flow.hwm")
  read -r wmed wmin wmax < <(spread "$WORK/flow.wall")
  printf '  wall %.1f s [%.1f-%.1f]; host CPU (overhead) %.3f s [%.3f-%.3f]; host peak RSS %.1f MiB [%.1f-%.1f]\n' \
    "$wmed" "$wmin" "$wmax" "$cmed" "$cmin" "$cmax" "$(calc "$hmed / 1024")" "$(calc "$hmin / 1024")" "$(calc "$hmax / 1024")"
  result $b stagehost wall_s_median "$wmed"
  result $b stagehost host_cpu_s_median "$cmed"
  result $b stagehost peak_rss_kib_median "$hmed"
  target $b "host overhead (own CPU), s" "$cmed" "<" 0.5 "$(fmt "$cmed" 3) s"
  target $b "host peak RSS, MiB" "$(calc "$hmed / 1024")" "<" 30 "$(fmt "$(calc "$hmed / 1024")" 1) MiB"
}
