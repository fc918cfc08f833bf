-- wrk -s benches/load/insert.lua http://…/insert: one small body per request (the ceiling).
dofile("benches/load/common.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"resCd":"0000","resMsg":"Success","pgCno":"26112115301200000001","amountInfo":{"currency":"KRW","amount":25000}}'
function done(summary, latency, requests) report(summary, latency) end
