-- Shared by the load harness's wrk scripts: one machine-readable line at the end of a run.
-- RESULT {"requests":…, "seconds":…, "rps":…, "p50_ms":…, "p99_ms":…, "errors":…, "non2xx":…}
function report(summary, latency, extra)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"errors":%d,"non2xx":%d%s}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.connect + e.read + e.write + e.timeout, e.status, extra or ""))
end
