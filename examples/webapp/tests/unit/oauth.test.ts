import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { handler } from "../../src/handlers/oauth";
import { sessionSecret, signToken } from "../../src/lib/session";
import { store } from "../../src/lib/store";
import { event, invoke, sendJson, stubServer, useTempStore, type StubServer } from "./helpers";

describe("oauth handler", () => {
  let cleanup: () => void;
  let provider: StubServer;
  before(async () => {
    cleanup = useTempStore();
    // the stub provider's contract (README): code "sandbox-code" -> {access_token}, else 400
    provider = await stubServer((request, response) => {
      const form = new URLSearchParams(request.body);
      if (request.method === "POST" && form.get("grant_type") === "authorization_code" && form.get("code") === "sandbox-code") {
        sendJson(response, 200, { access_token: "provider-token-1", token_type: "Bearer", scope: "profile" });
      } else if (form.get("code") === "boom") {
        sendJson(response, 500, { error: "server_error" });
      } else {
        sendJson(response, 400, { error: "invalid_grant" });
      }
    });
    process.env.OAUTH_TOKEN_URL = `${provider.url}/oauth/token`;
    process.env.OAUTH_CLIENT_ID = "unit-client";
    process.env.OAUTH_AUTHORIZE_URL = `${provider.url}/oauth/authorize`;
  });
  after(async () => {
    await provider.close();
    cleanup();
  });

  async function state(): Promise<string> {
    const started = await invoke(handler, event("GET", "/oauth/start"));
    assert.equal(started.status, 200);
    return String(started.body.state);
  }

  it("starts with a state and the provider's authorize URL", async () => {
    const started = await invoke(handler, event("GET", "/oauth/start"));
    assert.equal(started.body.redirectUri, "https://api.test/Prod/oauth/callback");
    const url = new URL(String(started.body.authorizeUrl));
    assert.equal(url.searchParams.get("client_id"), "unit-client");
    assert.equal(url.searchParams.get("state"), started.body.state);
    assert.equal(url.searchParams.get("response_type"), "code");
  });

  it("exchanges the code at the token URL and connects", async () => {
    const before = provider.received.length;
    const answer = await invoke(handler, event("GET", "/oauth/callback", { query: { code: "sandbox-code", state: await state() } }));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.connected, true);
    assert.equal(answer.body.tokenType, "Bearer");
    assert.equal(JSON.stringify(answer.body).includes("provider-token-1"), false, "the provider's token stays on the server");
    const sent = provider.received[before];
    assert.ok(sent);
    assert.equal(sent.url, "/oauth/token");
    assert.equal(sent.headers["content-type"], "application/x-www-form-urlencoded");
    const form = new URLSearchParams(sent.body);
    assert.equal(form.get("client_id"), "unit-client");
    assert.equal(form.get("redirect_uri"), "https://api.test/Prod/oauth/callback");
    const kept = await store().get<{ accessToken: string }>(`oauth#${String(answer.body.connectionId)}`);
    assert.equal(kept?.accessToken, "provider-token-1");
  });

  it("accepts a state once", async () => {
    const s = await state();
    assert.equal((await invoke(handler, event("GET", "/oauth/callback", { query: { code: "sandbox-code", state: s } }))).status, 200);
    const replay = await invoke(handler, event("GET", "/oauth/callback", { query: { code: "sandbox-code", state: s } }));
    assert.equal(replay.status, 400);
    assert.match(String(replay.body.error), /already used/);
  });

  it("refuses a forged, a foreign-use or a missing state without calling the provider", async () => {
    const before = provider.received.length;
    const secret = await sessionSecret(store());
    const states = ["forged.state", signToken(secret, "nonce"), signToken("other", "nonce", { use: "oauth-state" })];
    for (const s of states) {
      const answer = await invoke(handler, event("GET", "/oauth/callback", { query: { code: "sandbox-code", state: s } }));
      assert.equal(answer.status, 400, s);
    }
    assert.equal((await invoke(handler, event("GET", "/oauth/callback", { query: { code: "sandbox-code" } }))).status, 400);
    assert.equal((await invoke(handler, event("GET", "/oauth/callback", { query: { error: "access_denied" } }))).status, 400);
    assert.equal(provider.received.length, before);
  });

  it("answers 401 when the provider rejects the code and 502 when it fails", async () => {
    const rejected = await invoke(handler, event("GET", "/oauth/callback", { query: { code: "wrong", state: await state() } }));
    assert.equal(rejected.status, 401);
    const failed = await invoke(handler, event("GET", "/oauth/callback", { query: { code: "boom", state: await state() } }));
    assert.equal(failed.status, 502);
  });

  it("answers 502 when the provider cannot be reached", async () => {
    const saved = process.env.OAUTH_TOKEN_URL;
    const down = await stubServer(() => undefined);
    const url = `${down.url}/token`;
    await down.close();
    process.env.OAUTH_TOKEN_URL = url;
    try {
      const answer = await invoke(handler, event("GET", "/oauth/callback", { query: { code: "sandbox-code", state: await state() } }));
      assert.equal(answer.status, 502);
    } finally {
      process.env.OAUTH_TOKEN_URL = saved;
    }
  });
});
