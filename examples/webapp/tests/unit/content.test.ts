import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { handler as auth } from "../../src/handlers/auth";
import { handler } from "../../src/handlers/content";
import { event, invoke, signedIn, useTempStore } from "./helpers";

describe("content handler", () => {
  let cleanup: () => void;
  let token: string;
  before(async () => {
    cleanup = useTempStore();
    token = await signedIn(auth, "writer");
  });
  after(() => cleanup());

  it("creates an item and reads it back by id", async () => {
    const created = await invoke(handler, event("POST", "/content", { token, body: { title: "Hello", body: "First post" } }));
    assert.equal(created.status, 201);
    assert.equal(created.body.author, "writer");
    const id = String(created.body.id);
    const read = await invoke(handler, event("GET", `/content/${id}`, { resource: "/content/{id}", pathParameters: { id } }));
    assert.equal(read.status, 200);
    assert.deepEqual(read.body, created.body);
  });

  it("finds the id in the path when there are no path parameters", async () => {
    const created = await invoke(handler, event("POST", "/content", { token, body: { title: "T", body: "B" } }));
    const read = await invoke(handler, event("GET", `/content/${String(created.body.id)}`));
    assert.equal(read.status, 200);
    assert.equal(read.body.title, "T");
  });

  it("answers 401 when creating without a session", async () => {
    const answer = await invoke(handler, event("POST", "/content", { body: { title: "x", body: "y" } }));
    assert.equal(answer.status, 401);
  });

  it("answers 400 for a missing title and for a malformed id, 404 for an unknown id", async () => {
    assert.equal((await invoke(handler, event("POST", "/content", { token, body: { body: "no title" } }))).status, 400);
    assert.equal((await invoke(handler, event("GET", "/content/..%2Fetc", { resource: "/content/{id}", pathParameters: { id: "../etc" } }))).status, 400);
    const unknown = "00000000-0000-4000-8000-000000000000";
    const missing = await invoke(handler, event("GET", `/content/${unknown}`, { pathParameters: { id: unknown } }));
    assert.equal(missing.status, 404);
  });
});
