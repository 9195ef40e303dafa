# shellcheck shell=bash
# HTTP benchmarks of the "Network primitives" issue: sourced by run.sh, whose helpers (measure,
# stats, result, target, target_ratio, error, needed, peer_missing, rotated, section, calc, fmt)
# and state (BIN, WORK, REPEAT, GTIME, NODE, PY) they use; their results go into run.sh's one
# table and one JSON.
#
#   6. client: HTTP_COUNT GETs of a 1 KiB file from a local nginx, HTTP_WIDTH in flight:
#      stagehost http.request vs curl --parallel, node fetch, and wrk (the server's ceiling)
#   7. server: wrk against a stagehost http.serve hello-world vs a node http hello-world
#
# Every figure is checked before it is used: each client checks every status and body size, and
# nginx's own counters (stub_status) must show exactly the requests the client claims; wrk runs
# must show no socket error, no non-2xx answer and the expected bytes per response.

HTTP_COUNT=5000
HTTP_WIDTH=32
HTTP_BODY=1024
WRK_CLIENT_SECONDS=3
WRK_SERVER_SECONDS=5
# One client run lasts under a second, so a busy second elsewhere on the machine swings it more
# than the longer benchmarks: it gets more repetitions (the best one is the figure).
HTTP_RUNS=${BENCH_HTTP_RUNS:-$((3 * REPEAT))}
[[ $HTTP_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_HTTP_RUNS must be a positive integer"

NGINX=$(command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true)
CURL=$(command -v curl || true)
WRK=$(command -v wrk || true)

# ---- background processes (nginx, the servers): always stopped, even on an error or ^C ----

BG_PIDS=()
# bg_stop PID: TERM, then KILL if it is still there after 5 s; reaps it. Returns 0.
bg_stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    # a stopped process that is still our child stays until waited for: ask ps whether it is a zombie
    [[ $(ps -o stat= -p "$pid" 2>/dev/null) == Z* ]] && break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${BG_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  BG_PIDS=("${keep[@]}")
}
bg_stop_all() {
  local p
  for p in "${BG_PIDS[@]}"; do bg_stop "$p"; done
}

# free_port: a port on 127.0.0.1 that nothing listens on (the kernel picks it)
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# probe URL [FILE]: one GET on a fresh connection; prints "STATUS BYTES" (BYTES of the body) and
# writes the whole response (head and body) to FILE; returns non-zero on a transport failure.
probe() {
  local out=${2:-/dev/null}
  if [[ -n $CURL ]]; then
    "$CURL" -sS --max-time 5 -i -o "$out" -w '%{http_code} %{size_download}\n' "$1"
  else
    "$PY" - "$1" "$out" <<'EOF'
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
except urllib.error.HTTPError as e:
    r = e
body = r.read()
open(sys.argv[2], "wb").write(body)
print(r.status, len(body))
EOF
  fi
}

# wait_http URL PID SECONDS: until URL answers 200 (0), PID dies or the time is up (1)
wait_http() {
  local deadline=$((${EPOCHREALTIME//[!0-9]/} + $3 * 1000000)) got
  while ((${EPOCHREALTIME//[!0-9]/} < deadline)); do
    kill -0 "$2" 2>/dev/null || return 1
    got=$(probe "$1" 2>/dev/null || true)
    [[ $got == 200\ * ]] && return 0
    sleep 0.05
  done
  return 1
}

# ---- nginx ----

# nginx_start: nginx in the foreground on a free port, everything it writes in a fresh temp dir;
# sets NGINX_PID, NGINX_PORT, NGINX_DIR. Returns non-zero (after reporting) when it cannot start.
nginx_start() {
  NGINX_DIR=$(mktemp -d "$WORK/nginx.XXXXXX")
  mkdir -p "$NGINX_DIR/html" "$NGINX_DIR/tmp"
  # 1024 bytes, not gzip'd (gzip is off by default, and no client asks for it with a weight)
  awk 'BEGIN { for (i = 0; i < 64; i++) printf "0123456789abcdef" }' >"$NGINX_DIR/html/1k.txt"
  NGINX_PORT=$(free_port)
  # `user root` keeps the worker able to read the (root-owned, 0700) temp dir when run as root;
  # anyone else's nginx ignores it with a warning.
  cat >"$NGINX_DIR/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $NGINX_DIR/tmp/body;
  proxy_temp_path $NGINX_DIR/tmp/proxy;
  fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
  uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
  scgi_temp_path $NGINX_DIR/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $NGINX_DIR/html;
    location = /nginx_status { stub_status; }
  }
}
EOF
  # -e: even the messages before the config is read go to the temp dir, not /var/log/nginx
  "$NGINX" -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" -e "$NGINX_DIR/error.log" \
    </dev/null >"$NGINX_DIR/stdout" 2>&1 &
  NGINX_PID=$!
  BG_PIDS+=("$NGINX_PID")
  if ! wait_http "http://127.0.0.1:$NGINX_PORT/1k.txt" "$NGINX_PID" 10; then
    cat "$NGINX_DIR/stdout" "$NGINX_DIR/error.log" >"$WORK/nginx.err" 2>/dev/null || true
    bg_stop "$NGINX_PID"
    return 1
  fi
}

# nginx_counters: "ACCEPTED_CONNECTIONS REQUESTS" from stub_status (the probe's own request
# and connection included)
nginx_counters() {
  local f=$WORK/nginx_status
  probe "http://127.0.0.1:$NGINX_PORT/nginx_status" "$f" >/dev/null || return 1
  # the third line of the body holds "accepts handled requests"
  awk '/^ *[0-9]+ +[0-9]+ +[0-9]+ *\r?$/ { print $1, $3; found = 1 } END { exit !found }' "$f"
}

# ---- wrk ----

# wrk_run URL SECONDS EXPECTED_RESPONSE_BYTES: wrk -c$HTTP_WIDTH -t1 under GNU time; sets
# WRK_RPS, WRK_REQUESTS and M_* (measure). Returns 1 with WRK_PROBLEM set on a bad run.
wrk_run() {
  local rc=0 out=$WORK/wrk.out
  WRK_PROBLEM=""
  M_STDOUT=$out measure "$WRK" -c"$HTTP_WIDTH" -t1 -d"$2"s --timeout 5s "$1" || rc=$?
  cp "$out" "$WORK/wrk.last"
  if ((rc != 0)); then WRK_PROBLEM="wrk exited with $rc"; return 1; fi
  WRK_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  WRK_REQUESTS=$(awk '/ requests in / { print $1 }' "$out")
  local read_bytes
  read_bytes=$(awk '/ requests in / { v = $5; sub(/,$/, "", v); n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      m = (u == "KB") ? 1024 : (u == "MB") ? 1048576 : (u == "GB") ? 1073741824 : (u == "TB") ? 1099511627776 : 1
      printf "%.0f\n", n * m }' "$out")
  if [[ -z $WRK_RPS || -z $WRK_REQUESTS || -z $read_bytes ]]; then
    WRK_PROBLEM="unreadable wrk output"
  elif grep -q 'Socket errors' "$out"; then
    WRK_PROBLEM="wrk saw socket errors: $(grep 'Socket errors' "$out" | sed 's/^ *//')"
  elif grep -q 'Non-2xx or 3xx' "$out"; then
    WRK_PROBLEM="wrk saw bad answers: $(grep 'Non-2xx or 3xx' "$out" | sed 's/^ *//')"
  elif ((WRK_REQUESTS < 1000)); then
    WRK_PROBLEM="only $WRK_REQUESTS requests in ${2}s"
  else
    # wrk prints MiB with two decimals: allow that rounding, and nothing like a body gone missing
    local per
    per=$(calc "$read_bytes / $WRK_REQUESTS")
    if [[ $(check "$per" ">=" "$(calc "$3 * 0.97")") != PASS || $(check "$per" "<=" "$(calc "$3 * 1.03")") != PASS ]]; then
      WRK_PROBLEM="wrk read $(fmt "$per" 1) bytes per response, expected $3"
    fi
  fi
  [[ -z $WRK_PROBLEM ]]
}

# ---- 6. HTTP client ----

bench_http_client() {
  local b=http_client rep name tools=(stagehost) url rc
  section "6. HTTP client: $HTTP_COUNT GETs of a 1 KiB file from a local nginx, $HTTP_WIDTH in flight; best of $HTTP_RUNS"
  needed $b "$GTIME" "GNU time" time "GNU time (/usr/bin/time) is needed to measure peak RSS" || return
  needed $b "$NGINX" nginx nginx-light "nginx is needed as the server of this benchmark" || return
  needed $b "$PY" python3 python3 "python3 is needed to pick a free port" || return
  if [[ -n $CURL ]]; then tools+=(curl); else peer_missing curl curl; fi
  if [[ -n $NODE ]]; then tools+=(node); else peer_missing node nodejs; fi
  if [[ -n $WRK ]]; then tools+=(wrk); else peer_missing wrk wrk; fi
  if ! nginx_start; then
    error $b "nginx did not start" "$WORK/nginx.err"
    return
  fi
  url=http://127.0.0.1:$NGINX_PORT/1k.txt
  local resp_bytes got
  got=$(probe "$url" "$WORK/probe.resp" || true)
  resp_bytes=$(wc -c <"$WORK/probe.resp")
  if [[ $got != "200 $HTTP_BODY" ]]; then
    error $b "nginx answered '$got' for $url, expected '200 $HTTP_BODY'"
    bg_stop "$NGINX_PID"
    return
  fi
  echo "  nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$NGINX_PORT (pid $NGINX_PID), $resp_bytes bytes per response with headers; load $(cut -d' ' -f1-3 /proc/loadavg)"
  if [[ -n $CURL ]]; then
    # curl's -K config: one url/output pair per transfer, so 5000 URLs need no command line
    awk -v u="$url" -v n="$HTTP_COUNT" 'BEGIN { for (i = 0; i < n; i++) printf "url = \"%s\"\noutput = \"/dev/null\"\n", u }' >"$WORK/curl.cfg"
  fi
  for name in "${tools[@]}"; do : >"$WORK/hc.$name.wall"; : >"$WORK/hc.$name.rss"; : >"$WORK/hc.$name.conns"; : >"$WORK/hc.$name.inner"; done
  local c0 c1 a0 r0 a1 r1 conns reqs
  for ((rep = 0; rep < HTTP_RUNS; rep++)); do
    for name in $(rotated $rep "${tools[@]}"); do
      rc=0
      if ! c0=$(nginx_counters); then
        error $b "nginx's stub_status did not answer" "$NGINX_DIR/error.log"
        bg_stop "$NGINX_PID"
        return
      fi
      case $name in
        stagehost) measure "$BIN" "$BENCH_DIR/http_client.lua" "$url" $HTTP_COUNT $HTTP_WIDTH $HTTP_BODY || rc=$? ;;
        node) measure "$NODE" "$BENCH_DIR/http_client.js" "$url" $HTTP_COUNT $HTTP_WIDTH $HTTP_BODY || rc=$? ;;
        # --parallel-immediate: open the 32 connections at once instead of waiting to see
        # whether one could be multiplexed (it cannot: HTTP/1.1); they are then reused.
        curl) measure "$CURL" -sS --no-progress-meter --parallel --parallel-immediate --parallel-max $HTTP_WIDTH \
          -K "$WORK/curl.cfg" -w '%{http_code} %{size_download} %{num_connects}\n' || rc=$? ;;
        wrk)
          if ! wrk_run "$url" $WRK_CLIENT_SECONDS "$resp_bytes"; then
            error $b "wrk run failed: $WRK_PROBLEM" "$WORK/wrk.last"
            bg_stop "$NGINX_PID"
            return
          fi
          ;;
      esac
      if ! c1=$(nginx_counters); then
        error $b "nginx's stub_status did not answer after the $name run" "$NGINX_DIR/error.log"
        bg_stop "$NGINX_PID"
        return
      fi
      read -r a0 r0 <<<"$c0"
      read -r a1 r1 <<<"$c1"
      # minus the second stub_status probe's own connection and request
      conns=$((a1 - a0 - 1))
      reqs=$((r1 - r0 - 1))
      local bad=""
      case $name in
        stagehost | node)
          if ((rc != 0)) || ! [[ $(cat "$WORK/last.out") =~ ^ok\ $HTTP_COUNT\ ([0-9.]+)$ ]]; then
            bad="$name run failed (exit $rc) or its output was wrong: $(head -c 200 "$WORK/last.out")"
          else
            echo "${BASH_REMATCH[1]}" >>"$WORK/hc.$name.inner"
          fi
          ;;
        curl)
          local good
          good=$(grep -c "^200 $HTTP_BODY [0-9]*\$" "$WORK/last.out" || true)
          if ((rc != 0)) || [[ $good != "$HTTP_COUNT" || $(wc -l <"$WORK/last.out") != "$HTTP_COUNT" ]]; then
            bad="curl run failed (exit $rc) or not every transfer was '200 $HTTP_BODY' ($good of $HTTP_COUNT were)"
          fi
          ;;
      esac
      if [[ -z $bad && $name != wrk ]] && ((reqs != HTTP_COUNT)); then
        bad="nginx counted $reqs requests from $name, expected $HTTP_COUNT"
      fi
      if [[ -z $bad && $name == wrk ]] && ((reqs < WRK_REQUESTS)); then
        bad="nginx counted $reqs requests from wrk, which claims $WRK_REQUESTS"
      fi
      if [[ -n $bad ]]; then
        error $b "$bad" "$WORK/last.err"
        bg_stop "$NGINX_PID"
        return
      fi
      if [[ $name == wrk ]]; then
        # a rate, so store the equivalent wall for HTTP_COUNT requests: one formula for all
        calc "$HTTP_COUNT / $WRK_RPS" >>"$WORK/hc.$name.wall"
      else
        echo "$M_WALL" >>"$WORK/hc.$name.wall"
      fi
      echo "$M_RSS" >>"$WORK/hc.$name.rss"
      echo "$conns" >>"$WORK/hc.$name.conns"
    done
  done
  bg_stop "$NGINX_PID"
  if grep -q '\[\(error\|crit\|alert\|emerg\)\]' "$NGINX_DIR/error.log" 2>/dev/null; then
    echo "  note: nginx logged errors: $(grep -m1 '\[\(error\|crit\|alert\|emerg\)\]' "$NGINX_DIR/error.log")"
  fi
  echo "  every response checked: status 200, $HTTP_BODY-byte body; nginx's counters matched each client's $HTTP_COUNT requests"
  declare -A rps=() rss=()
  local wmin wmed rmed cmed imin label
  for name in "${tools[@]}"; do
    read -r wmin wmed _ < <(stats "$WORK/hc.$name.wall")
    read -r _ rmed _ < <(stats "$WORK/hc.$name.rss")
    read -r _ cmed _ < <(stats "$WORK/hc.$name.conns")
    rps[$name]=$(calc "$HTTP_COUNT / $wmin")
    rss[$name]=$rmed
    case $name in
      curl) label="curl --parallel" ;;
      node) label="node fetch" ;;
      wrk) label="wrk (ceiling)" ;;
      *) label=$name ;;
    esac
    local extra=""
    if [[ -s $WORK/hc.$name.inner ]]; then
      read -r imin _ _ < <(stats "$WORK/hc.$name.inner")
      extra=$(printf '   in-process %7.0f req/s' "$(calc "$HTTP_COUNT / $imin")")
      result $b "$name" inprocess_req_per_s "$(calc "$HTTP_COUNT / $imin")"
    fi
    printf '  %-16s %7.0f req/s (median %7.0f)   peak RSS %6.1f MiB   %3d connections%s\n' "$label" "${rps[$name]}" \
      "$(calc "$HTTP_COUNT / $wmed")" "$(calc "$rmed / 1024")" "$cmed" "$extra"
    printf '  %-16s runs, req/s: %s\n' "" "$(awk -v n="$HTTP_COUNT" '{ printf "%s%.0f", (NR > 1 ? " " : ""), n / $1 }' "$WORK/hc.$name.wall")"
    result $b "$name" req_per_s "${rps[$name]}"
    result $b "$name" median_req_per_s "$(calc "$HTTP_COUNT / $wmed")"
    result $b "$name" peak_rss_kib "$rmed"
    result $b "$name" connections "$cmed"
  done
  echo "  (req/s over the whole process, start-up included, except wrk's own figure over ${WRK_CLIENT_SECONDS}s)"
  if [[ -n ${rps[wrk]:-} ]]; then
    echo "  for scale: stagehost / wrk = $(fmt "$(calc "${rps[stagehost]} / ${rps[wrk]}")" 2)" \
      "$([[ -n ${rps[curl]:-} ]] && echo ", curl / wrk = $(fmt "$(calc "${rps[curl]} / ${rps[wrk]}")" 2)")"
  fi
  target_ratio $b "req/s, stagehost / curl --parallel" "${rps[stagehost]}" "${rps[curl]:-}" ">=" 1.0 0 "/s"
  target_ratio $b "req/s, stagehost / node fetch" "${rps[stagehost]}" "${rps[node]:-}" ">=" 1.5 0 "/s"
  target $b "peak RSS MiB, stagehost" "$(calc "${rss[stagehost]} / 1024")" "<=" 30 \
    "$(fmt "$(calc "${rss[stagehost]} / 1024")" 1) MiB" \
    "$([[ -n ${rss[curl]:-} ]] && echo "$(fmt "$(calc "${rss[curl]} / 1024")" 1) MiB")"
}

# ---- 7. HTTP server ----

# server_start NAME CMD...: starts a hello-world server that prints its port; sets SRV_PID and
# SRV_PORT. Returns non-zero when it did not come up answering "hello".
server_start() {
  local name=$1 i
  shift
  : >"$WORK/srv.$name.port"
  "$@" </dev/null >"$WORK/srv.$name.port" 2>"$WORK/srv.$name.err" &
  SRV_PID=$!
  BG_PIDS+=("$SRV_PID")
  SRV_PORT=""
  for ((i = 0; i < 200; i++)); do
    if [[ $(head -n 1 "$WORK/srv.$name.port") =~ ^([0-9]+)$ ]]; then SRV_PORT=${BASH_REMATCH[1]}; break; fi
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [[ -z $SRV_PORT ]] || ! wait_http "http://127.0.0.1:$SRV_PORT/" "$SRV_PID" 10; then
    bg_stop "$SRV_PID"
    return 1
  fi
}

# proc_figures PID: "PEAK_RSS_KIB CPU_SECONDS" of a live process, from /proc
proc_figures() {
  local hwm ticks
  hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
  # utime and stime are fields 14 and 15, counted after the ")" that ends the command name
  ticks=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
  echo "${hwm:-0} $(calc "${ticks:-0} / $(getconf CLK_TCK)")"
}

bench_http_server() {
  local b=http_server rep name tools=(stagehost) url got rc
  section "7. HTTP server: wrk -c$HTTP_WIDTH -t1 -d${WRK_SERVER_SECONDS}s against a hello-world server; best of $REPEAT"
  echo "  load $(cut -d' ' -f1-3 /proc/loadavg)"
  needed $b "$WRK" wrk wrk "wrk is needed to drive the servers" || return
  if [[ -z $GTIME || -z $PY ]]; then
    error $b "GNU time and python3 are needed"
    return
  fi
  rc=0
  "$BIN" -e 'require "stagehost.core.http_server"' </dev/null >/dev/null 2>"$WORK/last.err" || rc=$?
  if ((rc != 0)); then
    error $b "stagehost has no HTTP server module (require \"stagehost.core.http_server\" failed, exit $rc): not run" "$WORK/last.err"
    return
  fi
  if [[ -n $NODE ]]; then tools+=(node); else peer_missing node nodejs; fi
  for name in "${tools[@]}"; do : >"$WORK/hs.$name.rps"; : >"$WORK/hs.$name.rss"; : >"$WORK/hs.$name.cpu"; done
  local resp_bytes
  for ((rep = 0; rep < REPEAT; rep++)); do
    for name in $(rotated $rep "${tools[@]}"); do
      local cmd=()
      case $name in
        stagehost) cmd=("$BIN" "$BENCH_DIR/http_server.lua") ;;
        node) cmd=("$NODE" "$BENCH_DIR/http_server.js") ;;
      esac
      if ! server_start "$name" "${cmd[@]}"; then
        error $b "the $name server did not start or did not answer 200" "$WORK/srv.$name.err"
        return
      fi
      url=http://127.0.0.1:$SRV_PORT/
      got=$(probe "$url" "$WORK/probe.resp" || true)
      resp_bytes=$(wc -c <"$WORK/probe.resp")
      if [[ $got != "200 5" ]] || ! tail -c 5 "$WORK/probe.resp" | grep -qx hello; then
        error $b "the $name server answered '$got' (expected '200 5', body hello)" "$WORK/probe.resp"
        bg_stop "$SRV_PID"
        return
      fi
      if ! wrk_run "$url" $WRK_SERVER_SECONDS "$resp_bytes"; then
        error $b "wrk against the $name server: $WRK_PROBLEM" "$WORK/wrk.last"
        sed -n '1,10s/^/    | server stderr: /p' "$WORK/srv.$name.err"
        bg_stop "$SRV_PID"
        return
      fi
      # still alive and still right after the load
      got=$(probe "$url" "$WORK/probe.resp" || true)
      if [[ $got != "200 5" ]] || ! kill -0 "$SRV_PID" 2>/dev/null; then
        error $b "the $name server answered '$got' after the wrk run, or died" "$WORK/srv.$name.err"
        bg_stop "$SRV_PID"
        return
      fi
      local figs
      figs=$(proc_figures "$SRV_PID")
      bg_stop "$SRV_PID"
      # stagehost announces the SIGTERM that stops it; anything else it says is worth showing
      if grep -qv 'SIGTERM received' "$WORK/srv.$name.err"; then
        echo "  note: the $name server wrote to stderr: $(grep -v 'SIGTERM received' "$WORK/srv.$name.err" | head -c 300)"
      fi
      echo "$WRK_RPS" >>"$WORK/hs.$name.rps"
      echo "${figs% *}" >>"$WORK/hs.$name.rss"
      echo "${figs#* }" >>"$WORK/hs.$name.cpu"
      printf '  run %d %-10s %9.0f req/s   %s-byte responses\n' $((rep + 1)) "$name" "$WRK_RPS" "$resp_bytes"
    done
  done
  echo "  checked: 200 \"hello\" before and after every run; wrk saw no socket error, no non-2xx, the expected bytes per response"
  declare -A rps=()
  local max med rmed cmed
  for name in "${tools[@]}"; do
    read -r _ med max < <(sort -g "$WORK/hs.$name.rps" | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print v[1], m, v[NR] }')
    read -r _ rmed _ < <(stats "$WORK/hs.$name.rss")
    read -r _ cmed _ < <(stats "$WORK/hs.$name.cpu")
    rps[$name]=$max
    printf '  %-10s best %9.0f req/s   median %9.0f req/s   server peak RSS %6.1f MiB   server CPU %5.2f s per run\n' \
      "$name" "$max" "$med" "$(calc "$rmed / 1024")" "$cmed"
    result $b "$name" req_per_s "$max"
    result $b "$name" median_req_per_s "$med"
    result $b "$name" server_peak_rss_kib "$rmed"
    result $b "$name" server_cpu_s "$cmed"
  done
  target_ratio $b "req/s, stagehost / node http" "${rps[stagehost]}" "${rps[node]:-}" ">=" 1.0 0 "/s"
}
