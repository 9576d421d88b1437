-- wrk script: POST /api/v1/auth/login with a valid password (argon2id at OWASP cost).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email": "' .. os.getenv("AEGIS_EMAIL") .. '", "password": "' .. os.getenv("AEGIS_PASSWORD") .. '"}'

done = function(summary, latency, requests)
  io.write(string.format("requests %d, non-2xx/3xx %d\n", summary.requests, summary.errors.status))
  io.write(string.format("latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
