# Shell helpers shared by the benchmark scripts in bench/ (sourced; the script defines say()).

# Stops PID (a child of this shell) with SIG, waits up to SECS, then SIGKILL.
stop_pid() { # PID SIG SECS
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "-$2" "$pid" 2>/dev/null || true
  for i in $(seq 1 $(( $3 * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid still running after $3 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
