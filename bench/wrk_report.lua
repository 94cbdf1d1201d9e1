-- Shared by every scenario of bench/serving.py and bench/ingest.py: builds requests from a scenario
-- table and prints one JSON line with latency percentiles (microseconds) and counts when the run ends.
-- Environment (set by serving.py): SCENARIO, IDS_FROM, IDS_SPAN, STRIDE, THREAD_SPAN, BATCH.
-- Scenario "push" (ingest.py): PUSH_FILE holds one Pub/Sub push per line, "<ce-id>\t<JSON body>";
-- every thread sends them in turn from its own offset, formatted once at start.
local scenario = os.getenv("SCENARIO")
local from = tonumber(os.getenv("IDS_FROM") or "0")
local span = tonumber(os.getenv("IDS_SPAN") or "1")
local batch = tonumber(os.getenv("BATCH") or "100")
local thread_span = tonumber(os.getenv("THREAD_SPAN") or "0")
local threads = {}
local counter = 0
degraded = 0

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

local pushes = {}

function init(args)
  counter = index * thread_span
  math.randomseed(1000 + index)
  if scenario == "push" then
    for line in io.lines(os.getenv("PUSH_FILE")) do
      local id, payload = line:match("^([^\t]+)\t(.*)$")
      pushes[#pushes + 1] = wrk.format("POST", "/", {
        ["Content-Type"] = "application/json", ["ce-id"] = id, ["ce-specversion"] = "1.0",
        ["ce-type"] = "google.cloud.pubsub.topic.v1.messagePublished",
        ["ce-source"] = "//pubsub.googleapis.com/projects/local-project/topics/bench"}, payload)
    end
    counter = math.floor(#pushes * index / tonumber(os.getenv("WRK_THREADS") or "2"))
  end
end

local function uid(n)
  return string.format("u%09d", n)
end

local function body(first)
  local ids = {}
  for i = 0, batch - 1 do ids[#ids + 1] = '"' .. uid(first + i) .. '"' end
  return '{"user_ids":[' .. table.concat(ids, ",") .. ']}'
end

function request()
  if scenario == "push" then
    counter = counter % #pushes + 1
    return pushes[counter]
  elseif scenario == "floor" then
    return wrk.format("GET", "/")
  elseif scenario == "hit" then
    return wrk.format("GET", "/api/v1/features/user/" .. uid(from + math.random(0, span - 1)))
  elseif scenario == "miss" then
    counter = counter + 1
    return wrk.format("GET", "/api/v1/features/user/" .. uid(from + counter))
  elseif scenario == "batch_hit" then
    local first = from + math.random(0, span - batch)
    return wrk.format("POST", "/api/v1/features/batch", {["Content-Type"] = "application/json"}, body(first))
  elseif scenario == "batch_cold" then
    counter = counter + 1
    return wrk.format("POST", "/api/v1/features/batch", {["Content-Type"] = "application/json"},
                      body(from + counter * batch))
  end
end

-- Count answers served degraded (Redis skipped): a 200 that did not come from the cache path.
function response(status, headers, body)
  if string.find(body, '"degraded":true', 1, true) then degraded = degraded + 1 end
end

function done(summary, latency, requests)
  local total_degraded = 0
  for _, t in ipairs(threads) do total_degraded = total_degraded + (t:get("degraded") or 0) end
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors_status":%d,"errors_socket":%d,"degraded":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    total_degraded))
end
