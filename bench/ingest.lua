-- wrk script of bench/ingest.py (closed-loop phases): POST one token from the pool per request.
-- Arguments after "--": tokens_file first count unique|cycle
-- Prints one line "BENCH_JSON {...}" with counts and latency percentiles (microseconds).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- bench/ingest.py runs wrk with one thread (-t1), which therefore reads every token it is given.
function init(args)
  local path, first, count = args[1], tonumber(args[2]), tonumber(args[3])
  unique = args[4] == "unique"
  tokens = {}
  local n = 0
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    if n >= first + count then break end
    if n >= first then tokens[#tokens + 1] = line end
    n = n + 1
  end
  f:close()
  position = 1
  sent = 0
  exhausted = 0
  statuses = {}
  request_headers = { ["Content-Type"] = "application/secevent+jwt" }
end

function request()
  if position > #tokens then
    -- Out of tokens: a unique load repeats them (they come back 200 "duplicate", and the
    -- orchestrator reports the pool as too small); a reusable load just starts over.
    if unique then exhausted = exhausted + 1 end
    position = 1
  end
  local body = tokens[position]
  position = position + 1
  sent = sent + 1
  return wrk.format("POST", nil, request_headers, body)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local total_sent, total_exhausted, merged = 0, 0, {}
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_exhausted = total_exhausted + thread:get("exhausted")
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    parts[#parts + 1] = string.format('"%s": %d', status, count)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "sent": %d, "exhausted": %d, "statuses": {%s}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %f}\n',
    summary.duration, summary.requests, total_sent, total_exhausted, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean
  ))
end
