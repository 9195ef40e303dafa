-- JSON on cJSON: decode, encode (sorted keys; {pretty = true}), null, array, object.
return require "stagehost.core.json"
