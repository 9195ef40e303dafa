import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { handler as auth } from "../../src/handlers/auth";
import { handler } from "../../src/handlers/ai";
import { event, invoke, sendJson, signedIn, stubServer, useTempStore, type StubServer } from "./helpers";

describe("ai handler", () => {
  let cleanup: () => void;
  let service: StubServer;
  let token: string;
  before(async () => {
    cleanup = useTempStore();
    token = await signedIn(auth, "asker");
    // the stub AI service's contract (README): POST {prompt, max_tokens} -> {text}
    service = await stubServer((request, response) => {
      const input = JSON.parse(request.body) as { prompt: string; max_tokens: number };
      if (input.prompt === "fail") sendJson(response, 503, { error: "overloaded" });
      else if (input.prompt === "no text") sendJson(response, 200, { choices: [] });
      else if (input.prompt === "slow") setTimeout(() => sendJson(response, 200, { text: "late" }), 2000);
      else sendJson(response, 200, { text: `completion of: ${input.prompt} (${input.max_tokens})` });
    });
    process.env.AI_API_URL = `${service.url}/v1/complete`;
    process.env.AI_API_KEY = "unit-ai-key";
  });
  after(async () => {
    await service.close();
    cleanup();
  });

  it("forwards the prompt and returns the service's text", async () => {
    const answer = await invoke(handler, event("POST", "/ai/complete", { token, body: { prompt: "Say hi", maxTokens: 12 } }));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.deepEqual(answer.body, { text: "completion of: Say hi (12)" });
    const sent = service.received.at(-1);
    assert.equal(sent?.url, "/v1/complete");
    assert.equal(sent?.headers.authorization, "Bearer unit-ai-key");
    assert.deepEqual(JSON.parse(sent?.body ?? ""), { prompt: "Say hi", max_tokens: 12 });
  });

  it("answers 401 without a session, without calling the service", async () => {
    const before = service.received.length;
    assert.equal((await invoke(handler, event("POST", "/ai/complete", { body: { prompt: "hi" } }))).status, 401);
    assert.equal(service.received.length, before);
  });

  it("answers 400 for an empty prompt or a bad maxTokens", async () => {
    assert.equal((await invoke(handler, event("POST", "/ai/complete", { token, body: { prompt: "" } }))).status, 400);
    assert.equal((await invoke(handler, event("POST", "/ai/complete", { token, body: { prompt: "x", maxTokens: 0.5 } }))).status, 400);
  });

  it("answers 502 when the service fails or answers without text", async () => {
    assert.equal((await invoke(handler, event("POST", "/ai/complete", { token, body: { prompt: "fail" } }))).status, 502);
    assert.equal((await invoke(handler, event("POST", "/ai/complete", { token, body: { prompt: "no text" } }))).status, 502);
  });

  it("answers 504 when the service is slower than AI_TIMEOUT_MS", async () => {
    process.env.AI_TIMEOUT_MS = "100";
    try {
      const answer = await invoke(handler, event("POST", "/ai/complete", { token, body: { prompt: "slow" } }));
      assert.equal(answer.status, 504);
    } finally {
      delete process.env.AI_TIMEOUT_MS;
    }
  });
});
