-- The promotion policy: one table every flow reads. Development deploys on every push to
-- develop and rolls itself back; staging needs one approval; production needs two from the
-- production list. Change who may approve, how long a gate waits or where an environment
-- deploys here, not in the stage files.
return {
  -- the application the flows deploy, relative to the repository root
  app = "examples/webapp",

  environments = {
    development = {
      branches = { "develop" },
      stack = "webapp-development",
      parameters = { Stage = "development" },  -- the template's parameters here
      branch = "develop",           -- the Amplify branch
      approval = nil,               -- no gate: development deploys at once
      auto_rollback = true,         -- a failed smoke check redeploys the last good release
      checks = { "lint", "typecheck", "unit-tests" },
    },
    staging = {
      tags = { "rc-*" },
      stack = "webapp-staging",
      parameters = { Stage = "staging" },  -- the template's parameters here
      branch = "staging",
      approval = { required = 1, timeout = "24h", remind = { "1h" } },
      auto_rollback = false,        -- a failed staging deploy is looked at, not undone
      checks = { "lint", "typecheck", "unit-tests", "security" },
    },
    production = {
      tags = { "v*" },
      stack = "webapp-production",
      parameters = { Stage = "production" },  -- the template's parameters here
      branch = "main",
      approval = {
        required = 2, timeout = "72h", remind = { "24h", "1h" },
        approvers = { "alice", "bob", "carol" },
        forbid = { "actor", "authors" },
        require_comment = true,
      },
      auto_rollback = false,
      checks = { "lint", "typecheck", "unit-tests", "security" },
    },
  },

  -- parameters that differ in the sandbox: no DynamoDB there, the functions keep their items in
  -- files (the emulator fills OAuthTokenUrl and AiApiUrl with its stub providers)
  sandbox_parameters = { StorageMode = "file" },

  -- where packaged functions go (created on first use), and the Amplify app by name
  bucket = "stagehost-webapp-artifacts",
  amplify_app = "webapp",
  region = "eu-west-1",
}
