-- wrk -s benches/load/orders.lua http://app: shoppers creating orders through POST /api/orders
-- (each one a WeChat create call to the sandbox over loopback).
dofile("benches/load/common.lua")
wrk.method = "POST"
wrk.path = "/api/orders"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"items":[{"sku":"CERAMIC-MUG","quantity":2},{"sku":"STICKER-PACK","quantity":1}],'
  .. '"currency":"KRW","payMethod":"wechat","device":"pc",'
  .. '"customer":{"name":"Load Shopper","email":"load@example.com","phone":"010-1234-5678","address":"Seoul"}}'
function done(summary, latency, requests) report(summary, latency) end
