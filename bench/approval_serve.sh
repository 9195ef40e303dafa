# shellcheck shell=bash
# The approval page under load, of the approvals issue: sourced by run.sh, whose helpers
# (result, target, error, section, needed) and state (BIN, WORK, REPEAT, BENCH_DIR, PY) it
# uses. bench/approval_serve.lua does the work:
#   `stagehost serve` holding APPROVAL_GATES waiting runs (their gates in the state database)
#   and APPROVAL_CONNECTIONS open keep-alive connections, each having fetched an approval page:
#   serve's RSS; and, with the connections still open, a vote through the page (signed link,
#   CSRF token, POST) until the waiting stage logs it, on APPROVAL_VOTES fresh waiting hosts.

APPROVAL_GATES=200
APPROVAL_CONNECTIONS=1000
APPROVAL_VOTES=${BENCH_APPROVAL_VOTES:-$((REPEAT + 2))}

bench_approval_serve() {
  local b=approval_serve line rss hwm vote vote_max held
  section "10. stagehost serve: $APPROVAL_GATES waiting runs, $APPROVAL_CONNECTIONS open page connections; a vote to the resumed stage (median of $APPROVAL_VOTES)"
  needed $b "$PY" python3 python3 "python3 is needed to hold the connections open" || return
  mkdir -p "$WORK/approval_serve"
  # 1,000 sockets in the holder and the server, plus their files
  if ! line=$( (ulimit -n 4096 && STAGEHOST_BIN=$BIN "$BIN" "$BENCH_DIR/approval_serve.lua" "$WORK/approval_serve" \
    "$APPROVAL_GATES" "$APPROVAL_CONNECTIONS" "$APPROVAL_VOTES") 2>"$WORK/last.err" | tail -n 1); then
    error $b "bench/approval_serve.lua failed" "$WORK/last.err"
    return
  fi
  if [[ $line != ok\ * ]]; then
    error $b "bench/approval_serve.lua said: $line" "$WORK/last.err"
    return
  fi
  held=$(field held "$line")
  rss=$(field rss_kib "$line")
  hwm=$(field hwm_kib "$line")
  vote=$(field vote_s "$line")
  vote_max=$(field vote_max_s "$line")
  if [[ $held != "$APPROVAL_CONNECTIONS" ]]; then
    error $b "only $held of $APPROVAL_CONNECTIONS connections got their page" "$WORK/last.err"
    return
  fi
  printf '  serve RSS %s KiB (peak %s KiB) with %s connections open; vote to resumed stage %.3f s (max %.3f s)\n' \
    "$rss" "$hwm" "$held" "$vote" "$vote_max"
  result $b stagehost rss_kib "$rss"
  result $b stagehost peak_rss_kib "$hwm"
  result $b stagehost vote_to_stage_s_median "$vote"
  result $b stagehost vote_to_stage_s_max "$vote_max"
  target $b "serve RSS MiB, 200 runs + 1000 conns" "$(calc "$hwm / 1024")" "<" 64 "$(fmt "$(calc "$hwm / 1024")" 1) MiB"
  target $b "vote to resumed stage, s" "$vote" "<" 1 "$(fmt "$vote" 3) s"
}
