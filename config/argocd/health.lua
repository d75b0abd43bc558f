-- Argo CD resource health check for fluxjob.io/FluxJob.
--
-- Argo CD runs this with the FluxJob as the global table `obj` and reads the
-- returned table {status, message}. Custom checks from argocd-cm run without
-- the Lua standard libraries (only base, table, package and a safe os), so
-- this script uses no string.* functions.
--
--   Healthy      phase Succeeded (kstatus Ready=True)
--   Degraded     phase Failed or Cancelled, or Stalled=True (bad input,
--                namespace not allowed)
--   Suspended    phase Suspended (spec.suspend), or not started and held by
--                Flux (spec.urgency 0)
--   Progressing  everything else: no status yet, status older than the spec,
--                Pending, Submitted, Running, Flux unreachable
local hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the controller"

local function findCondition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function nonEmpty(s)
  return s ~= nil and s ~= ""
end

if obj.status == nil then
  return hs
end
local st = obj.status

local name = "FluxJob"
if nonEmpty(st.jobIDF58) then
  name = "Flux job " .. st.jobIDF58
end

-- The status describes an older spec (only spec.urgency can change).
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and st.observedGeneration ~= nil and st.observedGeneration < generation then
  hs.message = "Waiting for the controller to observe generation " .. tostring(generation)
  return hs
end

local function withDetail(text, cond)
  if nonEmpty(st.message) then
    return text .. ": " .. st.message
  end
  if cond ~= nil and nonEmpty(cond.message) then
    return text .. ": " .. cond.message
  end
  return text
end

local phase = st.phase
local ready = findCondition(st, "Ready")
local stalled = findCondition(st, "Stalled")
local failed = findCondition(st, "Failed")

if phase == "Succeeded" or (phase == nil and ready ~= nil and ready.status == "True") then
  hs.status = "Healthy"
  hs.message = name .. " succeeded"
  if st.exitStatus ~= nil then
    hs.message = hs.message .. " (exit status " .. tostring(st.exitStatus) .. ")"
  end
  return hs
end

if phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  local text = name .. " " .. phase
  if st.exitStatus ~= nil then
    text = text .. " (exit status " .. tostring(st.exitStatus) .. ")"
  end
  hs.message = withDetail(text, failed)
  return hs
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = withDetail(name .. " stalled", stalled)
  return hs
end

-- spec.suspend keeps the job from being submitted, or holds it in Flux.
if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = name .. " is suspended (spec.suspend)"
  return hs
end

-- Urgency 0 holds a job in Flux until its urgency is raised.
local urgency = nil
if obj.spec ~= nil then
  urgency = obj.spec.urgency
end
if urgency == 0 and phase ~= "Running" then
  hs.status = "Suspended"
  hs.message = name .. " is held by Flux (spec.urgency is 0)"
  return hs
end

local reachable = findCondition(st, "FluxReachable")
if reachable ~= nil and reachable.status == "False" then
  hs.message = withDetail(name .. ": Flux is unreachable", reachable)
  return hs
end

if phase == "Running" then
  hs.message = name .. " is running"
elseif phase == "Submitted" then
  hs.message = name .. " is submitted, waiting to run"
elseif nonEmpty(phase) then
  hs.message = name .. " is " .. phase
end
return hs
