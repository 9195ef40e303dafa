-- Roll an environment back to a recorded release: its packaged template (kept in the bucket)
-- with its parameters through a change set, then its Amplify job redeployed (a RETRY of that
-- job). The release is --var release=RUN_ID|TAG, else the newest good one before this run
-- (what development's automatic rollback uses).
local aws = require("stagehost.aws")
local App = require("lib.app")
local deploy = require("lib.deploy")

return function(ctx)
  local app = App.of(ctx)
  local release, why = deploy.find_release(ctx, app.env, ctx.vars.release, nil)
  if not release then error(("nothing to roll back to: %s"):format(why), 0) end
  ctx.log.warn(("rolling %s back to the release of run %s (%s, commit %s)"):format(app.env, release.run,
    release.tag or "no tag", (release.commit or "?"):sub(1, 12)))
  local s3 = aws.s3{ region = app.region }
  local body = s3:get_object{ bucket = release.bucket, key = release.template_key }.body
  local cfn = aws.cloudformation{ region = app.region }
  local cs = cfn:create_change_set{ stack_name = release.stack, body = body,
    parameters = deploy.with_secrets(release.parameters, body),
    description = ("stagehost rollback to run %s"):format(release.run) }
  local d = cfn:wait_change_set(cs)
  local status = "NO_CHANGES"
  if d.no_changes then
    cfn:delete_change_set(cs)
  else
    ctx.log.info(("rollback change set:\n%s"):format(d.preview))
    status = deploy.execute(ctx, app, cs.id).status
  end
  local outputs = deploy.outputs(app)
  local front = deploy.frontend(ctx, app, { API_URL = outputs.ApiUrl, STAGE = app.env },
    release.amplify_job and { job_type = "RETRY", job_id = release.amplify_job } or nil)
  ctx:artifact("rollback.json", { to = release, stack_status = status, outputs = outputs, amplify_job = front.job_id })
  return { rolled_back_to = release.run, tag = release.tag, stack_status = status, outputs = outputs,
    api_url = outputs.ApiUrl, url = front.url, job_id = front.job_id }
end
