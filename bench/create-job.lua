-- wrk script: every request creates a no-op job (demo.generate, no tokens)
-- with the bearer token in $TOKEN. Any answer but 202 is reported on stderr.
wrk.method = "POST"
wrk.body = '{"type":"demo.generate","input":{"tokens":0,"delay_ms":0}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

response = function(status, headers, body)
  if status ~= 202 then io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n") end
end
