// What the integration tests share: the deployed API's URL (API_URL, the stack's ApiUrl output),
// JSON requests against it, and a fresh signed-in user per test file.
import { randomBytes } from "node:crypto";

const TIMEOUT_MS = Number(process.env.INTEGRATION_TIMEOUT_MS ?? "") || 15_000;

function baseUrl(name) {
  const value = process.env[name] ?? "";
  if (value === "") throw new Error(`${name} is not set: point it at the deployed app (see README.md, Integration tests)`);
  return value.endsWith("/") ? value : `${value}/`;
}

export const apiUrl = () => baseUrl("API_URL");
export const appUrl = () => baseUrl("APP_URL");

/** A request to the API; answers {status, body} with the body parsed as JSON when it is JSON. */
export async function api(method, path, { body, token, query } = {}) {
  const url = new URL(path, apiUrl());
  for (const [key, value] of Object.entries(query ?? {})) url.searchParams.set(key, value);
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: the test sees the text
  }
  return { status: response.status, body: parsed, headers: response.headers };
}

export function uniqueName(prefix) {
  return `${prefix}-${randomBytes(5).toString("hex")}`;
}

/** Registers a new user and signs in: {username, password, token}. */
export async function newSession(prefix = "it") {
  const username = uniqueName(prefix);
  const password = `pw-${randomBytes(8).toString("hex")}`;
  const registered = await api("POST", "auth/register", { body: { username, password } });
  if (registered.status !== 201) throw new Error(`register ${username}: ${registered.status} ${JSON.stringify(registered.body)}`);
  const login = await api("POST", "auth/login", { body: { username, password } });
  if (login.status !== 200) throw new Error(`login ${username}: ${login.status} ${JSON.stringify(login.body)}`);
  return { username, password, token: login.body.token };
}
