-- JSON on cJSON: decode (bad input gives nil, "line L, column C: reason", as xml.decode and
-- yaml.decode do), encode (sorted keys; {pretty = true}), null, array, object.
return require "stagehost.core.json"
