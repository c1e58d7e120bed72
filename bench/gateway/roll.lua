-- wrk script of roll.sh: GET /notes/1 and POST /notes in turn (per wrk
-- thread), and a count of the answers by status, printed at the end as
-- `status <code> <count>` lines (GET answers 200, POST 201).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  sent = 0
  get = wrk.format("GET", "/notes/1")
  post = wrk.format("POST", "/notes", { ["Content-Type"] = "application/json" },
    '{"text":"written during the roll"}')
end

function request()
  sent = sent + 1
  if sent % 2 == 0 then
    return post
  end
  return get
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local codes = {}
  for status in pairs(total) do
    table.insert(codes, status)
  end
  table.sort(codes)
  for _, status in ipairs(codes) do
    io.write(string.format("status %d %d\n", status, total[status]))
  end
end
