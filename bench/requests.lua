-- wrk script: replays the requests of the file named by BENCH_REQUESTS, one per line as
-- METHOD<TAB>PATH<TAB>HEADER: VALUE|HEADER: VALUE<TAB>BODY, cycling when they run out, and
-- counts answers that are not 200 with the expected body (BENCH_EXPECT, a substring).
local requests = {}
local expect = os.getenv("BENCH_EXPECT") or ""
counter = 0
bad = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(_args)
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    local method, path, header_text, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = {}
    for name, value in header_text:gmatch("([^|:]+): ([^|]*)") do
      headers[name] = value
    end
    if body == "" then body = nil end
    table.insert(requests, wrk.format(method, path, headers, body))
  end
end

function request()
  counter = counter + 1
  return requests[(counter - 1) % #requests + 1]
end

function response(status, _headers, body)
  if status ~= 200 and status ~= 201 then
    bad = bad + 1
  elseif expect ~= "" and not body:find(expect, 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, _requests)
  local bad_total, sent = 0, 0
  for _, thread in ipairs(threads) do
    bad_total = bad_total + thread:get("bad")
    sent = sent + thread:get("counter")
  end
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "unexpected": %d, '
      .. '"sent": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout, bad_total, sent,
    latency:percentile(50), latency:percentile(99), latency.max))
end
