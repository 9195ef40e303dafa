// The sandbox's GitHub emulator driven by the real @octokit/rest: if octokit accepts every
// answer (shapes, Link pagination, upload URLs), the emulator speaks GitHub well enough.
// It also proves the emulator refuses what GitHub refuses: a wrong token (401 "Bad
// credentials"), no token (401), a repository it does not have (404), a commit status on a
// branch name instead of a SHA (422).
//   node tests/node/octokit.mjs <github_url> <token>   prints "octokit ok" and exits 0, or
//   names the first mismatch and exits 1; the sandbox must have acme/octo-widgets and accept
//   the token
import { Octokit } from "@octokit/rest";

const baseUrl = process.argv[2];
const token = process.argv[3];
if (!baseUrl || !token) {
  console.error("usage: node octokit.mjs <github_url> <token>");
  process.exit(2);
}
const owner = "acme";
const repo = "octo-widgets";
const octokit = new Octokit({ auth: token, baseUrl, userAgent: "stagehost-octokit-check" });

// Octokit's RequestError (from @octokit/request-error, which @octokit/rest does not re-export)
// is named "HttpError" and carries status and response.
function isRequestError(error) {
  return error instanceof Error && error.name === "HttpError" && typeof error.status === "number" && error.response;
}

// The error octokit raises for a call, or null when the call succeeds.
async function refusal(call) {
  try {
    await call();
  } catch (error) {
    return error;
  }
  return null;
}

function check(condition, what, actual) {
  if (!condition) {
    throw new Error(`${what} (got ${JSON.stringify(actual)})`);
  }
}

async function main() {
  const { data: repository, headers } = await octokit.rest.repos.get({ owner, repo });
  check(repository.full_name === `${owner}/${repo}`, "repos.get: full_name", repository.full_name);
  check(repository.owner.login === owner, "repos.get: owner.login", repository.owner.login);
  check(Number(headers["x-ratelimit-limit"]) > 0, "X-RateLimit-Limit on every answer", headers["x-ratelimit-limit"]);

  // releases
  const { data: created, status: createdStatus } = await octokit.rest.repos.createRelease({
    owner, repo, tag_name: "v3.1.0", name: "3.1.0", body: "first cut", target_commitish: "main",
  });
  check(createdStatus === 201, "createRelease: 201", createdStatus);
  check(Number.isInteger(created.id), "createRelease: an integer id", created.id);
  check(created.upload_url.startsWith(`${baseUrl}/uploads/`), "createRelease: upload_url on the sandbox", created.upload_url);

  const { data: byTag } = await octokit.rest.repos.getReleaseByTag({ owner, repo, tag: "v3.1.0" });
  check(byTag.id === created.id, "getReleaseByTag: the same release", byTag.id);

  const { data: updated } = await octokit.rest.repos.updateRelease({ owner, repo, release_id: created.id, prerelease: true });
  check(updated.prerelease === true, "updateRelease: prerelease", updated.prerelease);

  const { data: notes } = await octokit.rest.repos.generateReleaseNotes({ owner, repo, tag_name: "v3.1.0" });
  check(notes.name === "v3.1.0" && notes.body.includes("Full Changelog"), "generateReleaseNotes", notes);

  const content = "sha256  stagehost-3.1.0.tar.gz\n";
  const { data: asset, status: assetStatus } = await octokit.rest.repos.uploadReleaseAsset({
    owner, repo, release_id: created.id, url: created.upload_url, name: "SHA256SUMS", data: content,
    headers: { "content-type": "text/plain", "content-length": Buffer.byteLength(content) },
  });
  check(assetStatus === 201, "uploadReleaseAsset: 201", assetStatus);
  check(asset.name === "SHA256SUMS" && asset.size === Buffer.byteLength(content), "uploadReleaseAsset: name and size", asset);

  const notFound = await refusal(() => octokit.rest.repos.getReleaseByTag({ owner, repo, tag: "v0.0.0-none" }));
  check(notFound && notFound.status === 404, "getReleaseByTag of a missing tag: 404", notFound && notFound.status);

  const duplicate = await refusal(() => octokit.rest.repos.createRelease({ owner, repo, tag_name: "v3.1.0" }));
  check(duplicate && duplicate.status === 422, "createRelease of an existing tag: 422", duplicate && duplicate.status);
  check(duplicate.response.data.errors[0].code === "already_exists", "422: already_exists", duplicate.response.data);

  // issues, paginated over more than three pages of 10
  const titles = [];
  for (let i = 1; i <= 35; i++) {
    const { data: issue } = await octokit.rest.issues.create({ owner, repo, title: `issue ${i}`, labels: ["octokit"] });
    check(issue.number === i, "issues.create: numbered in order", issue.number);
    titles.push(issue.title);
  }
  let pages = 0;
  const listed = await octokit.paginate(octokit.rest.issues.listForRepo, { owner, repo, per_page: 10 }, (response) => {
    pages += 1;
    return response.data;
  });
  check(pages === 4, "paginate: four pages of 10", pages);
  check(listed.length === 35, "paginate: every issue", listed.length);
  check(new Set(listed.map((i) => i.number)).size === 35, "paginate: no issue twice", listed.length);

  const { data: comment } = await octokit.rest.issues.createComment({ owner, repo, issue_number: 1, body: "deployed" });
  check(comment.body === "deployed", "createComment", comment);
  const comments = await octokit.paginate(octokit.rest.issues.listComments, { owner, repo, issue_number: 1 });
  check(comments.length === 1 && comments[0].id === comment.id, "listComments", comments);

  const { data: closed } = await octokit.rest.issues.update({ owner, repo, issue_number: 1, state: "closed" });
  check(closed.state === "closed" && closed.closed_at, "issues.update: closed", closed);
  const open = await octokit.paginate(octokit.rest.issues.listForRepo, { owner, repo, state: "open", per_page: 100 });
  check(open.length === 34, "listForRepo state=open after closing one", open.length);

  // commit statuses
  const sha = "0123456789abcdef0123456789abcdef01234567";
  const { data: status } = await octokit.rest.repos.createCommitStatus({
    owner, repo, sha, state: "success", context: "stagehost/checks", target_url: "https://ci.example/1",
  });
  check(status.state === "success" && status.context === "stagehost/checks", "createCommitStatus", status);
  const { data: statuses } = await octokit.rest.repos.listCommitStatusesForRef({ owner, repo, ref: sha });
  check(statuses.length === 1 && statuses[0].id === status.id, "listCommitStatusesForRef", statuses);

  // deployments
  const { data: deployment, status: deploymentStatusCode } = await octokit.rest.repos.createDeployment({
    owner, repo, ref: sha, environment: "staging", auto_merge: false, required_contexts: [], description: "rc-1",
  });
  check(deploymentStatusCode === 201 && deployment.sha === sha, "createDeployment", deployment);
  const { data: dstatus } = await octokit.rest.repos.createDeploymentStatus({
    owner, repo, deployment_id: deployment.id, state: "success", environment_url: "https://staging.example",
  });
  check(dstatus.state === "success" && dstatus.environment_url === "https://staging.example", "createDeploymentStatus", dstatus);
  const deployments = await octokit.paginate(octokit.rest.repos.listDeployments, { owner, repo, environment: "staging" });
  check(deployments.length === 1 && deployments[0].id === deployment.id, "listDeployments", deployments);
  const { data: dstatuses } = await octokit.rest.repos.listDeploymentStatuses({ owner, repo, deployment_id: deployment.id });
  check(dstatuses.length === 1, "listDeploymentStatuses", dstatuses);

  // what GitHub refuses, refused the same way
  const anonymous = await refusal(() => new Octokit({ baseUrl }).rest.repos.get({ owner, repo }));
  check(isRequestError(anonymous) && anonymous.status === 401, "no token: a 401 RequestError", anonymous && anonymous.status);
  check(anonymous.response.data.message === "Requires authentication", "no token: Requires authentication", anonymous.response.data);

  const wrongToken = await refusal(() =>
    new Octokit({ auth: "ghp_wrongTokenTheSandboxNeverGave00000000", baseUrl }).rest.repos.get({ owner, repo }));
  check(isRequestError(wrongToken) && wrongToken.status === 401, "wrong token: a 401 RequestError", wrongToken && wrongToken.status);
  check(wrongToken.message.startsWith("Bad credentials"), "wrong token: Bad credentials", wrongToken.message);
  check(typeof wrongToken.response.data.documentation_url === "string", "wrong token: documentation_url", wrongToken.response.data);

  const unknownRepo = await refusal(() => octokit.rest.repos.get({ owner, repo: "no-such-repo" }));
  check(isRequestError(unknownRepo) && unknownRepo.status === 404, "unknown repository: 404", unknownRepo && unknownRepo.status);
  check(unknownRepo.response.data.message === "Not Found", "unknown repository: Not Found", unknownRepo.response.data);
  const unknownIssue = await refusal(() => octokit.rest.issues.create({ owner, repo: "no-such-repo", title: "lost" }));
  check(unknownIssue && unknownIssue.status === 404, "an issue in an unknown repository: 404", unknownIssue && unknownIssue.status);

  const onBranch = await refusal(() =>
    octokit.rest.repos.createCommitStatus({ owner, repo, sha: "main", state: "success", context: "stagehost/checks" }));
  check(isRequestError(onBranch) && onBranch.status === 422, "a status on a branch name: 422", onBranch && onBranch.status);
  check(onBranch.response.data.message === "No commit found for SHA: main", "422: No commit found for SHA", onBranch.response.data);

  console.log("octokit ok");
}

main().catch((error) => {
  console.error(`octokit check failed: ${error.message}`);
  process.exit(1);
});
