// Needs the deployed AI function to reach a text service that follows the stub contract in
// README.md: POST {prompt, max_tokens} -> {text}.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { api, newSession } from "./api.mjs";

describe("AI services", () => {
  let session;
  before(async () => {
    session = await newSession("ai");
  });

  it("completes a prompt", async () => {
    const answer = await api("POST", "ai/complete", { token: session.token, body: { prompt: "Write a haiku about staging", maxTokens: 64 } });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(typeof answer.body.text, "string");
    assert.ok(answer.body.text.length > 0, "the text is not empty");
  });

  it("refuses prompts from someone not signed in", async () => {
    const answer = await api("POST", "ai/complete", { body: { prompt: "hi" } });
    assert.equal(answer.status, 401);
  });

  it("refuses an empty prompt", async () => {
    const answer = await api("POST", "ai/complete", { token: session.token, body: { prompt: "" } });
    assert.equal(answer.status, 400);
  });
});
