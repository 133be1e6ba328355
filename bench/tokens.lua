-- wrk script: each request carries the next bearer token of TOKENS_FILE (one
-- per line), round robin, so the server reads many different sessions.
-- Headers given with -H (e.g. Connection: close) are kept.
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do
  tokens[#tokens + 1] = line
end
local next_index = 0

request = function()
  next_index = next_index % #tokens + 1
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  headers["Authorization"] = "Bearer " .. tokens[next_index]
  return wrk.format("GET", nil, headers)
end
