-- The soak's request mix for bench/run.ts (row 10): 90% of requests for a few hot files, 10% walking
-- through many store paths that are not cached (each thread from its own random start).
-- args[1]: a file of lines "hot <url path>" or "cold <url path>". The report's done() is appended
-- by bench/run.ts.
local hot, cold = {}, {}
local next_cold = 0

function init(args)
  local f = assert(io.open(args[1]))
  for line in f:lines() do
    local kind, p = line:match("^(%a+) (.+)$")
    if kind == "hot" then hot[#hot + 1] = p elseif kind == "cold" then cold[#cold + 1] = p end
  end
  f:close()
  -- Threads share os.time(); the address of a fresh table tells them apart.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  next_cold = math.random(#cold)
end

function request()
  local p
  if math.random() < 0.9 then
    p = hot[math.random(#hot)]
  else
    next_cold = next_cold % #cold + 1
    p = cold[next_cold]
  end
  return wrk.format("GET", p)
end
