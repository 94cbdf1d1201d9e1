-- The fault suite's load (tests/faults/load.py): GETs of read_features for users drawn at random from
-- [IDS_FROM, IDS_FROM + IDS_SPAN), every answer counted by status and, for 4xx/5xx, by error code
-- (a degraded 200 by its degraded_reason). Prints one JSON line when the run ends:
-- {"statuses": {"200": n, "200:redis_timeout": d, "503:dependency_unavailable": m},
-- "socket_errors": {"connect": ..}, "requests": n}.
local from = tonumber(os.getenv("IDS_FROM") or "1")
local span = tonumber(os.getenv("IDS_SPAN") or "1")
local threads = {}
counts = {}
if os.getenv("API_KEY") then wrk.headers["X-API-Key"] = os.getenv("API_KEY") end

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(4242 + index)
end

function request()
  return wrk.format("GET", string.format("/api/v1/features/user/u%09d", from + math.random(0, span - 1)))
end

function response(status, headers, body)
  local key = tostring(status)
  if status >= 400 then
    key = key .. ":" .. (string.match(body, '"code":"([^"]+)"') or "?")
  elseif string.find(body, '"degraded":true', 1, true) then
    key = key .. ":" .. (string.match(body, '"degraded_reason":"([^"]+)"') or "degraded")
  end
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts") or {}) do merged[k] = (merged[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(merged) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
  local e = summary.errors
  io.write(string.format('{"statuses":{%s},"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
                         '"requests":%d}\n', table.concat(parts, ","), e.connect, e.read, e.write, e.timeout,
                         summary.requests))
end
