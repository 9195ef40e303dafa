-- YAML on libyaml: decode (mappings to tables, sequences to json.array-marked arrays, YAML 1.2
-- core schema scalars, CloudFormation short-form tags as their long form).
return require "stagehost.core.yaml"
