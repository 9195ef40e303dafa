// OAuth 2.0 authorization-code flow with an external provider:
//   GET /oauth/start     a signed, short-lived state (and the provider's authorize URL when known)
//   GET /oauth/callback  ?code=&state= : checks the state, exchanges the code at OAUTH_TOKEN_URL,
//                        keeps the provider's token in the store under the state's nonce (so a
//                        state works once) and answers {connected, connectionId}.
import { randomBytes } from "node:crypto";
import { HttpError, errorText, header, json, router, type ApiEvent, type ApiResult } from "../../lib/http";
import { sessionSecret, signToken, verifyToken } from "../../lib/session";
import { store } from "../../lib/store";

const STATE_TTL_SECONDS = 600;
const EXCHANGE_TIMEOUT_MS = 10_000;

interface Connection {
  provider: string;
  accessToken: string;
  tokenType: string;
  scope?: string;
  connectedAt: string;
}

function config(): { tokenUrl: string; clientId: string; authorizeUrl: string } {
  const tokenUrl = process.env.OAUTH_TOKEN_URL ?? "";
  if (tokenUrl === "") throw new Error("OAUTH_TOKEN_URL is not set");
  return {
    tokenUrl,
    clientId: process.env.OAUTH_CLIENT_ID ?? "stagehost-webapp",
    authorizeUrl: process.env.OAUTH_AUTHORIZE_URL ?? "",
  };
}

/** Where the provider sends the user back: OAUTH_REDIRECT_URI, else this API's own callback. */
function redirectUri(event: ApiEvent): string {
  const configured = process.env.OAUTH_REDIRECT_URI ?? "";
  if (configured !== "") return configured;
  const proto = header(event, "x-forwarded-proto") ?? "https";
  const host = header(event, "host") ?? "localhost";
  const stage = event.requestContext?.stage;
  return `${proto}://${host}${stage ? `/${stage}` : ""}/oauth/callback`;
}

async function start(event: ApiEvent): Promise<ApiResult> {
  const { clientId, authorizeUrl } = config();
  const nonce = randomBytes(16).toString("hex");
  const state = signToken(await sessionSecret(store()), nonce, { use: "oauth-state", ttlSeconds: STATE_TTL_SECONDS });
  const result: Record<string, string> = { state, redirectUri: redirectUri(event) };
  if (authorizeUrl !== "") {
    const url = new URL(authorizeUrl);
    url.searchParams.set("response_type", "code");
    url.searchParams.set("client_id", clientId);
    url.searchParams.set("redirect_uri", result.redirectUri ?? "");
    url.searchParams.set("state", state);
    result.authorizeUrl = url.toString();
  }
  return json(200, result);
}

async function exchange(tokenUrl: string, form: URLSearchParams): Promise<Record<string, unknown>> {
  let response: Response;
  try {
    response = await fetch(tokenUrl, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: form.toString(),
      signal: AbortSignal.timeout(EXCHANGE_TIMEOUT_MS),
    });
  } catch (err) {
    console.error("token exchange failed:", errorText(err));
    throw new HttpError(502, "the OAuth provider could not be reached");
  }
  const text = await response.text();
  if (response.status === 400 || response.status === 401) {
    throw new HttpError(401, "the OAuth provider rejected the authorization code");
  }
  if (!response.ok) throw new HttpError(502, `the OAuth provider answered ${response.status}`);
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new HttpError(502, "the OAuth provider's answer is not JSON");
  }
}

async function callback(event: ApiEvent): Promise<ApiResult> {
  const { tokenUrl, clientId } = config();
  const query = event.queryStringParameters ?? {};
  if (query.error) throw new HttpError(400, `the OAuth provider refused: ${query.error}`);
  const code = query.code ?? "";
  const state = query.state ?? "";
  if (code === "" || state === "") throw new HttpError(400, "'code' and 'state' query parameters are required");
  const claims = verifyToken(await sessionSecret(store()), state, "oauth-state");
  if (!claims) throw new HttpError(400, "state is invalid or expired: start again at /oauth/start");

  const form = new URLSearchParams({
    grant_type: "authorization_code",
    code,
    redirect_uri: redirectUri(event),
    client_id: clientId,
  });
  const token = await exchange(tokenUrl, form);
  if (typeof token.access_token !== "string" || token.access_token === "") {
    throw new HttpError(502, "the OAuth provider's answer has no access_token");
  }
  const connection: Connection = {
    provider: new URL(tokenUrl).host,
    accessToken: token.access_token,
    tokenType: typeof token.token_type === "string" ? token.token_type : "Bearer",
    connectedAt: new Date().toISOString(),
  };
  if (typeof token.scope === "string") connection.scope = token.scope;
  if (!(await store().create(`oauth#${claims.sub}`, connection))) {
    throw new HttpError(400, "state was already used: start again at /oauth/start");
  }
  // the provider's token stays on the server
  return json(200, {
    connected: true,
    connectionId: claims.sub,
    provider: connection.provider,
    tokenType: connection.tokenType,
  });
}

export const handler = router({
  "GET /oauth/start": start,
  "GET /oauth/callback": callback,
});
