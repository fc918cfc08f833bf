-- wrk -s benches/load/notify.lua http://app -- BODIES THREADS once|cycle
-- KICC's approval notifications, one line of BODIES (JSON) per delivery. Thread i takes lines
-- i, i+THREADS, …  `once`: each line is sent exactly once and the thread stops when all of its
-- deliveries are answered (idle connections meanwhile ask /healthz, not counted); wrk itself
-- still waits out -d, so the rate of a `once` run is read from the app's receipt times.
-- `cycle`: the lines again and again until -d ends (duplicates after the first round).
dofile("benches/load/common.lua")
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  cycle = args[3] == "cycle"
  queue, sent, acked, other = {}, 0, 0, 0
  local n = 0
  for line in io.lines(file) do
    if n % nthreads == id then table.insert(queue, line) end
    n = n + 1
  end
  share = #queue
  -- wrk calls thread 0's request() once before the run to check the request's shape: that call
  -- must not use up a delivery.
  verifying = (id == 0)
end

function request()
  if verifying then
    verifying = false
    return wrk.format("GET", "/healthz")
  end
  if sent < share or (cycle and share > 0) then
    sent = sent + 1
    return wrk.format("POST", "/webhooks/kicc/payment",
      { ["Content-Type"] = "application/json; charset=utf-8" }, queue[(sent - 1) % share + 1])
  end
  return wrk.format("GET", "/healthz")
end

function response(status, headers, body)
  if string.find(body, '"resCd"', 1, true) then
    if status == 200 and string.find(body, '"resCd":"0000"', 1, true) then
      acked = acked + 1
    else
      other = other + 1
    end
    if not cycle and acked + other >= share then wrk.thread:stop() end
  end
end

function done(summary, latency, requests)
  local total_share, total_acked, total_other = 0, 0, 0
  for _, t in ipairs(threads) do
    total_share = total_share + t:get("sent")
    total_acked = total_acked + t:get("acked")
    total_other = total_other + t:get("other")
  end
  report(summary, latency, string.format(',"deliveries":%d,"acked":%d,"not_acked":%d',
    total_share, total_acked, total_other))
end
