-- Argo CD health check of recserve.dev/RecommenderModel (Lua 5.1, as Argo CD runs it).
-- It reads the kstatus conditions the operator writes:
--   Progressing  no status yet, or status.observedGeneration < metadata.generation
--   Degraded     Stalled=True (the operator cannot progress without a spec change)
--   Progressing  Reconciling=True (building engines, deploying, walking canary steps)
--   Healthy      Ready=True and the current generation observed
--   Degraded     Ready=False with neither Reconciling nor Stalled
--   Progressing  otherwise (conditions not written yet)
local hs = {}

local function condition_message(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the recserve operator to observe the model"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the recserve operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type ~= nil then
      conditions[c.type] = c
    end
  end
end

local function is(kind, value)
  return conditions[kind] ~= nil and conditions[kind].status == value
end

local phase = obj.status.phase or "Unknown"

if is("Stalled", "True") then
  hs.status = "Degraded"
  hs.message = condition_message(conditions["Stalled"], "Stalled")
  return hs
end

if is("Reconciling", "True") then
  hs.status = "Progressing"
  local message = condition_message(conditions["Reconciling"], phase)
  if obj.status.canary ~= nil and obj.status.canary.weight ~= nil then
    message = message .. " (canary at " .. tostring(obj.status.canary.weight) .. "%)"
  end
  hs.message = message
  return hs
end

if is("Ready", "True") then
  hs.status = "Healthy"
  hs.message = condition_message(conditions["Ready"], "Ready")
  if is("CanaryHealthy", "False") then
    hs.message = hs.message .. "; canary unhealthy: " .. condition_message(conditions["CanaryHealthy"], "rolled back")
  end
  return hs
end

if is("Ready", "False") then
  hs.status = "Degraded"
  hs.message = condition_message(conditions["Ready"], phase)
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for conditions (phase " .. phase .. ")"
return hs
