import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HttpError, json, router, type ApiEvent } from "../../src/lib/http";
import { event, invoke } from "./helpers";

// Which function answers: the route's own, a template's when API Gateway gives only the path.
const handler = router({
  "GET /items": async () => json(200, { route: "list" }),
  "GET /items/{id}": async (ev) => json(200, { route: "one", path: ev.path }),
  "POST /items/{id}/fail": async () => {
    throw new HttpError(409, "taken");
  },
});

function withoutResource(method: string, path: string): ApiEvent {
  const plain = event(method, path);
  delete plain.resource;
  return plain;
}

describe("router", () => {
  it("answers a route by its resource template, or by its path when there is none", async () => {
    assert.deepEqual((await invoke(handler, event("GET", "/items"))).body, { route: "list" });
    assert.deepEqual((await invoke(handler, event("GET", "/items/7", { resource: "/items/{id}" }))).body, { route: "one", path: "/items/7" });
    assert.deepEqual((await invoke(handler, withoutResource("GET", "/items/abc"))).body, { route: "one", path: "/items/abc" });
    assert.deepEqual((await invoke(handler, withoutResource("GET", "/items/"))).body, { route: "list" });
  });

  it("answers 404 naming the route for another method, a deeper path or an empty segment", async () => {
    const routes: [string, string][] = [["DELETE", "/items"], ["GET", "/items/a/b"], ["POST", "/items//fail"], ["GET", "/other"]];
    for (const [method, path] of routes) {
      const answer = await invoke(handler, withoutResource(method, path));
      assert.equal(answer.status, 404, `${method} ${path}`);
      assert.match(String(answer.body.error), /^no route /);
    }
  });

  it("turns a handler's HttpError into its answer", async () => {
    const answer = await invoke(handler, withoutResource("POST", "/items/1/fail"));
    assert.deepEqual([answer.status, answer.body], [409, { error: "taken" }]);
  });
});
