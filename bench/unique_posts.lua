-- Posts pre-signed, unique bodies (from make_bodies.py) so that no body is sent twice.
-- wrk script arguments: STRIDE [OFFSET [ROUTE]]. Line i of bodies.txt goes to the wrk thread whose
-- OFFSET + thread number equals i mod STRIDE; several wrk processes (one per replica) use the
-- same STRIDE and different OFFSETs to share one file without overlap. ROUTE `whatsapp` posts
-- to /webhook/whatsapp with Meta's X-Hub-Signature-256 (bodies from make_whatsapp_bodies.py).
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  local stride = tonumber(args[1] or "2")
  local slot = tonumber(args[2] or "0") + id
  lines = {}
  local i = 0
  for line in io.lines("bodies.txt") do
    if i % stride == slot then
      local signature, body = line:match("^(%x+)\t(.*)$")
      table.insert(lines, {signature, body})
    end
    i = i + 1
  end
  next_line = 1
  whatsapp = args[3] == "whatsapp"
end
function request()
  local item = lines[next_line]
  next_line = next_line + 1
  if next_line > #lines then next_line = 1 end
  if whatsapp then
    return wrk.format("POST", "/webhook/whatsapp",
      {["X-Hub-Signature-256"] = "sha256=" .. item[1], ["Content-Type"] = "application/json"}, item[2])
  end
  return wrk.format("POST", "/webhook", {["X-Signature"] = item[1], ["Content-Type"] = "application/json"}, item[2])
end
function done(summary, latency, requests)
  io.write(string.format("non-2xx-or-3xx: %d\n", summary.errors.status))
  for _, p in pairs({50, 90, 99, 99.9}) do
    io.write(string.format("p%g: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
