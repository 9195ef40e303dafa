// The deployed frontend (APP_URL, the Amplify branch's URL): the page, its script, and the API
// URL it was built with. Skipped, saying so, when APP_URL is not set.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { apiUrl, appUrl } from "./api.mjs";

const skip = process.env.APP_URL ? false : "APP_URL is not set (no frontend deployment to test)";

async function get(path) {
  return fetch(new URL(path, appUrl()), { signal: AbortSignal.timeout(15_000) });
}

describe("frontend", { skip }, () => {
  it("serves the page and its script", async () => {
    const page = await get("");
    assert.equal(page.status, 200);
    assert.match(await page.text(), /data-app="stagehost-webapp"/);
    const script = await get("app.js");
    assert.equal(script.status, 200);
    assert.ok((await script.text()).length > 0);
  });

  it("was built with this deployment's API URL", async () => {
    const config = await get("config.json");
    assert.equal(config.status, 200);
    const { apiUrl: built } = await config.json();
    assert.equal(built.endsWith("/") ? built : `${built}/`, apiUrl());
  });
});
