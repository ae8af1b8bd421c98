-- report.lua: wrk's summary as one JSON line (prefixed "JSON ") after its own
-- report, for bench/run.sh. Used for both sides of target 2, so the two runs
-- differ in nothing but the URL:
--   wrk -t2 -c1000 -d10s --latency -s bench/wrk/report.lua http://127.0.0.1:PORT/healthz
-- wrk counts a status other than 2xx/3xx under errors.status.

done = function(summary, latency, requests)
	local e = summary.errors
	local seconds = summary.duration / 1e6
	io.write(string.format(
		'JSON {"requests":%d,"duration_s":%.3f,"requests_per_s":%.1f,' ..
		'"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
		'"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f}}\n',
		summary.requests, seconds, summary.requests / seconds,
		e.connect, e.read, e.write, e.status, e.timeout,
		latency:percentile(50) / 1000, latency:percentile(90) / 1000,
		latency:percentile(99) / 1000, latency.max / 1000))
end
