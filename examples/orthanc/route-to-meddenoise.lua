-- Orthanc routing for meddenoise: every stable ORIGINAL series goes to the meddenoise node;
-- the derived series the node sends back are kept and never sent again (no loop).
--
-- Load it with "LuaScripts" in orthanc.json (examples/orthanc/orthanc.json).  Tested with
-- Orthanc 1.10 (tests/test_orthanc_recipe.py).  docs/deployment.md, "Orthanc routing".

-- The DicomModalities entry of the meddenoise node in the Orthanc configuration.
MEDDENOISE_MODALITY = "MEDDENOISE"
-- How every DerivationDescription (0008,2111) that meddenoise writes begins.
MEDDENOISE_DERIVATION = "Denoised by meddenoise"
-- true: send only series whose ImageType starts with ORIGINAL (no reformats, no secondary
-- captures, nothing without an ImageType).  false: send every series except meddenoise's own.
ONLY_ORIGINAL = false


local function StartsWith(text, prefix)
  return type(text) == "string" and string.sub(text, 1, string.len(prefix)) == prefix
end

-- The first value of ImageType (simplified tags join the values with a backslash).
local function FirstImageType(tags)
  local imageType = tags["ImageType"]
  if type(imageType) ~= "string" then
    return ""
  end
  local first = string.match(imageType, "^([^\\]*)") or ""
  first = string.gsub(first, "%s", "")
  return string.upper(first)
end

-- The loop guard: what meddenoise derived says so in ImageType and DerivationDescription.
function IsDerivedByMeddenoise(tags)
  return FirstImageType(tags) == "DERIVED" and
    StartsWith(tags["DerivationDescription"], MEDDENOISE_DERIVATION)
end

function OnStableSeries(seriesId, tags, metadata)
  local series = ParseJson(RestApiGet("/series/" .. seriesId))
  local instances = series["Instances"] or {}
  if #instances == 0 then
    return
  end
  -- One instance speaks for the series: meddenoise writes every derived series whole, under a
  -- SeriesInstanceUID of its own.
  local first = ParseJson(RestApiGet("/instances/" .. instances[1] .. "/tags?simplify"))
  if IsDerivedByMeddenoise(first) then
    print("meddenoise routing: series " .. seriesId .. " was derived by meddenoise: not sent")
    return
  end
  if ONLY_ORIGINAL and FirstImageType(first) ~= "ORIGINAL" then
    print("meddenoise routing: series " .. seriesId .. " is not ORIGINAL: not sent")
    return
  end
  -- An asynchronous job: the Lua engine is not blocked while the series is sent, and a failed
  -- send stays visible (and can be resubmitted) under /jobs.
  local answer = RestApiPost("/modalities/" .. MEDDENOISE_MODALITY .. "/store",
    DumpJson({ Resources = { seriesId }, Asynchronous = true }, true))
  local job = ParseJson(answer)
  print("meddenoise routing: series " .. seriesId .. " sent to " .. MEDDENOISE_MODALITY ..
    " (job " .. tostring(job["ID"]) .. ")")
end
