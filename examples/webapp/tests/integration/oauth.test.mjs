// Needs the deployed OAuth function to reach a provider that follows the stub contract in
// README.md: its token endpoint accepts the code "sandbox-code" only.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { api } from "./api.mjs";

async function freshState() {
  const started = await api("GET", "oauth/start");
  assert.equal(started.status, 200, JSON.stringify(started.body));
  assert.equal(typeof started.body.state, "string");
  return started.body.state;
}

describe("OAuth integration", () => {
  it("completes the callback with the provider's code", async () => {
    const state = await freshState();
    const done = await api("GET", "oauth/callback", { query: { code: "sandbox-code", state } });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(done.body.connected, true);
    assert.equal(typeof done.body.connectionId, "string");
    const replay = await api("GET", "oauth/callback", { query: { code: "sandbox-code", state } });
    assert.equal(replay.status, 400, "a state works once");
  });

  it("reports a code the provider rejects", async () => {
    const rejected = await api("GET", "oauth/callback", { query: { code: "not-the-sandbox-code", state: await freshState() } });
    assert.equal(rejected.status, 401);
  });

  it("refuses a forged state", async () => {
    const forged = await api("GET", "oauth/callback", { query: { code: "sandbox-code", state: "forged.state" } });
    assert.equal(forged.status, 400);
  });
});
