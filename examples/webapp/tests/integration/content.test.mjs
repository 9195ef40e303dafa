import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { api, newSession } from "./api.mjs";

describe("content creation", () => {
  let session;
  before(async () => {
    session = await newSession("content");
  });

  it("creates content and reads it back", async () => {
    const created = await api("POST", "content", {
      token: session.token,
      body: { title: "Integration test", body: "Written by the staging flow's integration tests." },
    });
    assert.equal(created.status, 201);
    assert.equal(created.body.author, session.username);
    const read = await api("GET", `content/${created.body.id}`);
    assert.equal(read.status, 200);
    assert.deepEqual(read.body, created.body);
  });

  it("refuses content from someone not signed in", async () => {
    const created = await api("POST", "content", { body: { title: "t", body: "b" } });
    assert.equal(created.status, 401);
  });

  it("answers 404 for content that does not exist", async () => {
    const read = await api("GET", "content/00000000-0000-4000-8000-000000000000");
    assert.equal(read.status, 404);
  });
});
