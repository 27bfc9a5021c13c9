-- Argo CD health check of recserve.dev/RecommenderModel (Lua 5.1, as Argo CD runs it).
-- It reads the kstatus conditions the operator writes:
--   Progressing  no status yet, or status.observedGeneration < metadata.generation
--   Degraded     Stalled=True (the operator cannot progress without a spec change)
--   Progressing  Reconciling=True (building engines, deploying, walking canary steps)
--   Healthy      Ready=True and the current generation observed
--   Degraded     Ready=False with neither Reconciling nor Stalled
--   Progressing  otherwise (conditions not written yet)
-- Retraining (status.training) and the registry's champion (status.champion) are informational:
-- a retrain that failed registered nothing and serving is unaffected, so they only add to the
-- message, never change the health.
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

-- What status.training and status.champion add to the message ("" when nothing to say).
local function informational()
  local parts = ""
  local training = obj.status.training
  if training ~= nil then
    if training.lastRun == "Failed" then
      parts = parts .. "; last retrain failed"
      if training.lastScheduleTime ~= nil then
        parts = parts .. " (started " .. tostring(training.lastScheduleTime) .. ")"
      end
      if training.cronJob ~= nil then
        parts = parts .. ", see the Jobs of CronJob " .. tostring(training.cronJob)
      end
    end
    if training.message ~= nil and training.message ~= "" then
      parts = parts .. "; retraining: " .. training.message
    end
  end
  local champion = obj.status.champion
  if champion ~= nil and champion.model ~= nil and champion.version ~= nil then
    parts = parts .. "; champion " .. tostring(champion.model) .. "/" .. tostring(champion.version)
  end
  return parts
end

local function finish(status, message)
  hs.status = status
  hs.message = message .. informational()
  return hs
end

if is("Stalled", "True") then
  return finish("Degraded", condition_message(conditions["Stalled"], "Stalled"))
end

if is("Reconciling", "True") then
  local message = condition_message(conditions["Reconciling"], phase)
  if obj.status.canary ~= nil and obj.status.canary.weight ~= nil then
    message = message .. " (canary at " .. tostring(obj.status.canary.weight) .. "%)"
  end
  return finish("Progressing", message)
end

if is("Ready", "True") then
  local message = condition_message(conditions["Ready"], "Ready")
  if is("CanaryHealthy", "False") then
    message = message .. "; canary unhealthy: " .. condition_message(conditions["CanaryHealthy"], "rolled back")
  end
  return finish("Healthy", message)
end

if is("Ready", "False") then
  return finish("Degraded", condition_message(conditions["Ready"], phase))
end

return finish("Progressing", "Waiting for conditions (phase " .. phase .. ")")
