-- wrk script for bench/openai-proxy.sh (issue 19): every request is
-- OpenAI's POST /v1/chat/completions, and every response is checked.
--
-- Environment:
--   BODY_FILE  the request's JSON body (model, messages, stream or not)
--   KEY        sent as Authorization: Bearer KEY (empty: no header)
--   STREAM     1: the response is an SSE stream of chat.completion.chunk
--              events ending with `data: [DONE]`; 0: one chat.completion
--   TOKENS     the upstream's answer is `tok0 tok1 … tok{TOKENS-1} `
--
-- A response counts as good when its status is 200 and its text (the
-- message's content; for a stream every delta's content joined, in order)
-- equals that answer, with `data: [DONE]` at the end of a stream. wrk
-- itself counts non-2xx; `done` prints `CHECK good=N bad=N` (all threads)
-- and the first bad response of each thread goes to stderr.
local body_file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("KEY") or ""
if key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  good = 0
  bad = 0
  shown = false
  stream = os.getenv("STREAM") == "1"
  local pieces = {}
  for i = 0, tonumber(os.getenv("TOKENS")) - 1 do
    pieces[#pieces + 1] = "tok" .. i .. " "
  end
  expected = table.concat(pieces)
end

-- The text of a response: every `"content": "…"` string joined (the
-- answer's text has no quote or backslash, so a lazy match is exact).
local function text_of(body)
  local pieces = {}
  for piece in body:gmatch('"content"%s*:%s*"(.-)"') do
    pieces[#pieces + 1] = piece
  end
  return table.concat(pieces)
end

function response(status, headers, body)
  local ok = status == 200 and text_of(body) == expected
  if ok and stream then
    ok = body:sub(-16):find("data: %[DONE%]") ~= nil
  end
  if ok then
    good = good + 1
  else
    bad = bad + 1
    if not shown then
      shown = true
      io.stderr:write("bad response: status " .. status .. ": " .. body:sub(1, 400) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local g, b = 0, 0
  for _, thread in ipairs(threads) do
    g = g + thread:get("good")
    b = b + thread:get("bad")
  end
  io.write(string.format("CHECK good=%d bad=%d\n", g, b))
end
