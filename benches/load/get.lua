-- wrk -s benches/load/get.lua URL: plain GETs, then the RESULT line.
dofile("benches/load/common.lua")
function done(summary, latency, requests) report(summary, latency) end
