import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { api, newSession, uniqueName } from "./api.mjs";

describe("auth flows", () => {
  it("registers, signs in and knows the user", async () => {
    const { username, token } = await newSession("auth");
    assert.equal(typeof token, "string");
    const me = await api("GET", "auth/me", { token });
    assert.equal(me.status, 200);
    assert.equal(me.body.username, username);
  });

  it("refuses a wrong password", async () => {
    const { username } = await newSession("auth");
    const login = await api("POST", "auth/login", { body: { username, password: "definitely-wrong" } });
    assert.equal(login.status, 401);
  });

  it("refuses a duplicate registration", async () => {
    const { username } = await newSession("auth");
    const again = await api("POST", "auth/register", { body: { username, password: "another-password" } });
    assert.equal(again.status, 409);
  });

  it("refuses /auth/me without a valid token", async () => {
    assert.equal((await api("GET", "auth/me")).status, 401);
    assert.equal((await api("GET", "auth/me", { token: "not.a-token" })).status, 401);
  });

  it("answers 400 for a malformed registration", async () => {
    const bad = await api("POST", "auth/register", { body: { username: uniqueName("x"), password: "short" } });
    assert.equal(bad.status, 400);
  });
});
