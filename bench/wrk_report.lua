-- Shared by every scenario of bench/serving.py and bench/ingest.py: builds requests from a scenario
-- table and prints one JSON line of counts and latency percentiles (microseconds) when the run ends.
--
-- Honest counts: only 2xx answers are throughput ("ok"); every other status is counted apart
-- ("non_2xx", by code in "statuses"), and so are socket errors. Latency percentiles are wrk's, over
-- every answer (wrk keeps one histogram). Answers carrying "cache_hit" are split into "hits" and
-- "misses" (one per vector: a batch answer holds many), so a miss scenario shows how many of its
-- answers were NOT misses and a hit scenario how many were not hits.
--
-- Environment (set by serving.py / ingest.py): SCENARIO; IDS_FROM, IDS_SPAN (the user numbers a
-- scenario draws from: u%09d); BATCH (ids per batch request); WRK_THREADS (wrk's -t).
--   hit, batch_hit      ids drawn at random from [IDS_FROM, IDS_FROM + IDS_SPAN), repeats expected
--   miss, batch_cold    the span split between the threads, each thread's part in a random order
--                       without repeats (never adjacent ids, which would read adjacent pages); past
--                       its end a thread starts a new random order, and those repeats show as hits
--   push                PUSH_FILE: one Pub/Sub push per line, "<ce-id>\t<JSON body>", sent in turn, as a
--                       binary-mode CloudEvent (Eventarc), or with PUSH_SHAPE=raw as the raw push body alone
--   feast, feast_batch  Feast's feature server (bench/feast/compare.py): POST /get-online-features of the
--                       features FEAST_FEATURES names (comma-separated "view:feature") for one id, or BATCH
--                       ids, drawn as in hit; a value whose status is PRESENT counts as a hit, NOT_FOUND a miss
local scenario = os.getenv("SCENARIO")
local from = tonumber(os.getenv("IDS_FROM") or "0")
local span = tonumber(os.getenv("IDS_SPAN") or "1")
local batch = tonumber(os.getenv("BATCH") or "100")
local wrk_threads = tonumber(os.getenv("WRK_THREADS") or "1")
local feast = string.sub(scenario or "", 1, 5) == "feast"
local feast_features = ""
for ref in string.gmatch(os.getenv("FEAST_FEATURES") or "", "[^,]+") do
  feast_features = feast_features .. (feast_features == "" and "" or ",") .. '"' .. ref .. '"'
end
local threads = {}

-- per thread (each wrk thread has its own Lua state); read by done() through thread:get
ok, non_2xx, hits, misses, degraded = 0, 0, 0, 0, 0
statuses = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

local pushes = {}
local order = {}
local cursor = 0
local counter = 0
local part_from, part_span = 0, 0

local function shuffle()
  for i = 1, part_span do order[i] = part_from + i - 1 end
  for i = part_span, 2, -1 do
    local j = math.random(1, i)
    order[i], order[j] = order[j], order[i]
  end
  cursor = 0
end

local function next_cold()
  if cursor >= part_span then shuffle() end
  cursor = cursor + 1
  return order[cursor]
end

function init(args)
  math.randomseed(1000 + index)
  if scenario == "push" then
    for line in io.lines(os.getenv("PUSH_FILE")) do
      local id, payload = line:match("^([^\t]+)\t(.*)$")
      local headers = {["Content-Type"] = "application/json"}
      if os.getenv("PUSH_SHAPE") ~= "raw" then
        headers = {["Content-Type"] = "application/json", ["ce-id"] = id, ["ce-specversion"] = "1.0",
                   ["ce-type"] = "google.cloud.pubsub.topic.v1.messagePublished",
                   ["ce-source"] = "//pubsub.googleapis.com/projects/local-project/topics/bench"}
      end
      pushes[#pushes + 1] = wrk.format("POST", "/", headers, payload)
    end
    counter = math.floor(#pushes * index / wrk_threads)
  elseif scenario == "miss" or scenario == "batch_cold" then
    part_span = math.floor(span / wrk_threads)
    part_from = from + index * part_span
    if part_span < 1 then error("IDS_SPAN " .. span .. " is smaller than the " .. wrk_threads .. " threads") end
    shuffle()
  end
end

local function uid(n)
  return string.format("u%09d", n)
end

local function batch_body(draw)
  local ids = {}
  for i = 1, batch do ids[i] = '"' .. uid(draw()) .. '"' end
  return '{"user_ids":[' .. table.concat(ids, ",") .. ']}'
end

local function any_cached()
  return from + math.random(0, span - 1)
end

local json = {["Content-Type"] = "application/json"}
-- API_KEY: the read functions' credentials (bench/serving.py makes a client for the run); GET requests
-- carry wrk.headers, POST requests this table
if os.getenv("API_KEY") then
  wrk.headers["X-API-Key"] = os.getenv("API_KEY")
  json["X-API-Key"] = os.getenv("API_KEY")
end

local function feast_body(n)
  local ids = {}
  for i = 1, n do ids[i] = '"' .. uid(any_cached()) .. '"' end
  return '{"features":[' .. feast_features .. '],"entities":{"user_id":[' .. table.concat(ids, ",") .. ']}}'
end

function request()
  if scenario == "push" then
    counter = counter % #pushes + 1
    return pushes[counter]
  elseif scenario == "floor" or scenario == "floor_async" then
    return wrk.format("GET", "/")
  elseif scenario == "hit" or scenario == "hit_unguarded" then
    return wrk.format("GET", "/api/v1/features/user/" .. uid(any_cached()))
  elseif scenario == "miss" then
    return wrk.format("GET", "/api/v1/features/user/" .. uid(next_cold()))
  elseif scenario == "batch_hit" or scenario == "batch_hit_unguarded" then
    return wrk.format("POST", "/api/v1/features/batch", json, batch_body(any_cached))
  elseif scenario == "batch_cold" then
    return wrk.format("POST", "/api/v1/features/batch", json, batch_body(next_cold))
  elseif scenario == "feast" then
    return wrk.format("POST", "/get-online-features", json, feast_body(1))
  elseif scenario == "feast_batch" then
    return wrk.format("POST", "/get-online-features", json, feast_body(batch))
  end
  error("unknown SCENARIO " .. tostring(scenario))
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non_2xx = non_2xx + 1
    statuses[status] = (statuses[status] or 0) + 1
    return
  end
  ok = ok + 1
  if body == nil then return end
  local h, m
  if feast then
    _, h = string.gsub(body, '"PRESENT"', "")
    _, m = string.gsub(body, '"NOT_FOUND"', "")
  else
    _, h = string.gsub(body, '"cache_hit":true', "")
    _, m = string.gsub(body, '"cache_hit":false', "")
  end
  hits, misses = hits + h, misses + m
  -- an answer served degraded (Redis skipped): complete and exact, but not from the cache path
  if string.find(body, '"degraded":true', 1, true) then degraded = degraded + 1 end
end

function done(summary, latency, requests)
  local total = {ok = 0, non_2xx = 0, hits = 0, misses = 0, degraded = 0}
  local by_status = {}
  for _, t in ipairs(threads) do
    for name, _ in pairs(total) do total[name] = total[name] + (t:get(name) or 0) end
    for code, n in pairs(t:get("statuses") or {}) do by_status[code] = (by_status[code] or 0) + n end
  end
  local codes = {}
  for code, n in pairs(by_status) do codes[#codes + 1] = string.format('"%d":%d', code, n) end
  local errors = summary.errors
  io.write(string.format(
    '{"answers":%d,"ok":%d,"non_2xx":%d,"statuses":{%s},"errors_socket":%d,"duration_us":%d,' ..
    '"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"hits":%d,"misses":%d,"degraded":%d}\n',
    summary.requests, total.ok, total.non_2xx, table.concat(codes, ","),
    errors.connect + errors.read + errors.write + errors.timeout, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    total.hits, total.misses, total.degraded))
end
