-- wrk script of bench/gateway_overhead.sh: POSTs the JSON body in the file
-- $BENCH_BODY, with `Authorization: Bearer $BENCH_KEY` when set, and prints one
-- machine-readable RESULT line at the end (latencies in microseconds).
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
if os.getenv("BENCH_ANTHROPIC") == "1" then wrk.headers["anthropic-version"] = "2023-06-01" end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
