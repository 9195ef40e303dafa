// AI text: POST /ai/complete {prompt, maxTokens?} (signed-in users) forwards the prompt to the
// text service at AI_API_URL and answers {text}. AI_API_KEY, when set, goes as a bearer token.
import { HttpError, errorText, json, jsonBody, router, stringField, type ApiEvent, type ApiResult } from "../../lib/http";
import { requireUser } from "../../lib/session";
import { store } from "../../lib/store";

const DEFAULT_MAX_TOKENS = 256;

function timeoutMs(): number {
  const value = Number(process.env.AI_TIMEOUT_MS ?? "");
  return Number.isFinite(value) && value > 0 ? value : 10_000;
}

async function complete(event: ApiEvent): Promise<ApiResult> {
  await requireUser(event, store());
  const url = process.env.AI_API_URL ?? "";
  if (url === "") throw new Error("AI_API_URL is not set");
  const body = jsonBody(event);
  const prompt = stringField(body, "prompt", 1, 4000);
  const maxTokens = body.maxTokens ?? DEFAULT_MAX_TOKENS;
  if (typeof maxTokens !== "number" || !Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > 4096) {
    throw new HttpError(400, "'maxTokens' must be an integer from 1 to 4096");
  }

  const headers: Record<string, string> = { "Content-Type": "application/json", Accept: "application/json" };
  const key = process.env.AI_API_KEY ?? "";
  if (key !== "") headers.Authorization = `Bearer ${key}`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify({ prompt, max_tokens: maxTokens }),
      signal: AbortSignal.timeout(timeoutMs()),
    });
  } catch (err) {
    console.error("AI request failed:", errorText(err));
    if ((err as Error).name === "TimeoutError") throw new HttpError(504, "the AI service did not answer in time");
    throw new HttpError(502, "the AI service could not be reached");
  }
  if (!response.ok) throw new HttpError(502, `the AI service answered ${response.status}`);
  let answer: unknown;
  try {
    answer = await response.json();
  } catch {
    throw new HttpError(502, "the AI service's answer is not JSON");
  }
  const text = (answer as { text?: unknown } | null)?.text;
  if (typeof text !== "string") throw new HttpError(502, "the AI service's answer has no text");
  return json(200, { text });
}

export const handler = router({
  "POST /ai/complete": complete,
});
