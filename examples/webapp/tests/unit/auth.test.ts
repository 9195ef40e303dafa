import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { handler } from "../../src/handlers/auth";
import { signToken, verifyToken } from "../../src/lib/session";
import { event, invoke, signedIn, useTempStore } from "./helpers";

describe("auth handler", () => {
  let cleanup: () => void;
  before(() => {
    cleanup = useTempStore();
  });
  after(() => cleanup());

  it("registers a user, signs in and answers /auth/me with the user", async () => {
    const token = await signedIn(handler, "alice");
    const me = await invoke(handler, event("GET", "/auth/me", { token }));
    assert.equal(me.status, 200);
    assert.equal(me.body.username, "alice");
    assert.equal(me.result.headers["Content-Type"], "application/json");
  });

  it("returns a bearer token with its lifetime on login", async () => {
    await signedIn(handler, "bob", "bob's long password");
    const login = await invoke(handler, event("POST", "/auth/login", { body: { username: "BOB", password: "bob's long password" } }));
    assert.equal(login.status, 200);
    assert.equal(login.body.tokenType, "Bearer");
    assert.equal(login.body.expiresIn, 3600);
    assert.match(String(login.body.token), /^[\w-]+\.[\w-]+$/);
  });

  it("refuses a second registration of the same name with 409", async () => {
    await signedIn(handler, "carol");
    const again = await invoke(handler, event("POST", "/auth/register", { body: { username: "carol", password: "another password" } }));
    assert.equal(again.status, 409);
  });

  it("answers 401 for a wrong password and for an unknown user alike", async () => {
    await signedIn(handler, "dave", "dave's password");
    const wrong = await invoke(handler, event("POST", "/auth/login", { body: { username: "dave", password: "not dave's password" } }));
    const unknown = await invoke(handler, event("POST", "/auth/login", { body: { username: "nobody", password: "whatever123" } }));
    assert.equal(wrong.status, 401);
    assert.equal(unknown.status, 401);
    assert.deepEqual(wrong.body, unknown.body);
  });

  it("answers 401 on /auth/me without a token, with a forged one and with an expired one", async () => {
    const none = await invoke(handler, event("GET", "/auth/me"));
    assert.equal(none.status, 401);
    const forged = await invoke(handler, event("GET", "/auth/me", { token: signToken("not the secret", "alice") }));
    assert.equal(forged.status, 401);
    const token = await signedIn(handler, "erin");
    const [payload, signature] = token.split(".");
    const tampered = `${Buffer.from(JSON.stringify({ sub: "alice", use: "session", iat: 1, exp: 9e9 })).toString("base64url")}.${signature}`;
    assert.notEqual(payload, tampered.split(".")[0]);
    assert.equal((await invoke(handler, event("GET", "/auth/me", { token: tampered }))).status, 401);
  });

  it("checks expiry and use when verifying tokens", () => {
    const now = Date.UTC(2025, 0, 1);
    const token = signToken("s3cret", "alice", { now, ttlSeconds: 60 });
    assert.equal(verifyToken("s3cret", token, "session", now + 30_000)?.sub, "alice");
    assert.equal(verifyToken("s3cret", token, "session", now + 61_000), undefined);
    assert.equal(verifyToken("s3cret", token, "oauth-state", now + 30_000), undefined);
  });

  it("uses SESSION_SECRET when it is set", async () => {
    process.env.SESSION_SECRET = "configured-secret-for-the-test";
    try {
      const login = await invoke(handler, event("POST", "/auth/login", { body: { username: "alice", password: "correct horse battery" } }));
      assert.equal(login.status, 200);
      assert.ok(verifyToken("configured-secret-for-the-test", String(login.body.token)));
    } finally {
      delete process.env.SESSION_SECRET;
    }
  });

  it("answers 400 for bad bodies", async () => {
    const cases = [
      event("POST", "/auth/login"),
      event("POST", "/auth/login", { body: "{not json" }),
      event("POST", "/auth/login", { body: "[1,2]" }),
      event("POST", "/auth/register", { body: { username: "x", password: "long enough" } }),
      event("POST", "/auth/register", { body: { username: "-bad-start", password: "long enough" } }),
      event("POST", "/auth/register", { body: { username: "frank", password: "short" } }),
    ];
    for (const ev of cases) {
      const answer = await invoke(handler, ev);
      assert.equal(answer.status, 400, `${ev.body ?? "(no body)"}: ${JSON.stringify(answer.body)}`);
      assert.equal(typeof answer.body.error, "string");
    }
  });

  it("decodes base64 bodies", async () => {
    const ev = event("POST", "/auth/login", {
      body: Buffer.from(JSON.stringify({ username: "alice", password: "correct horse battery" })).toString("base64"),
    });
    ev.isBase64Encoded = true;
    assert.equal((await invoke(handler, ev)).status, 200);
  });

  it("answers 404 for a route it does not serve", async () => {
    assert.equal((await invoke(handler, event("DELETE", "/auth/me"))).status, 404);
  });
});
