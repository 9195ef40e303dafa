// Session tokens: base64url(JSON payload) + "." + base64url(HMAC-SHA256 of that part). The key is
// SESSION_SECRET when set (a NoEcho template parameter), else one random key per table, made on
// first use and kept in the store so every function instance signs with the same one.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { HttpError, header, type ApiEvent } from "./http";
import type { Store } from "./store";

export const TOKEN_TTL_SECONDS = 3600;
const SECRET_KEY = "config#session-secret";

/** What a token is for: a token made for one use is refused for another. */
export type TokenUse = "session" | "oauth-state";

export interface SessionClaims {
  sub: string;
  use: TokenUse;
  iat: number;
  exp: number;
}

export interface SignOptions {
  use?: TokenUse;
  ttlSeconds?: number;
  now?: number;
}

export async function sessionSecret(db: Store, env = process.env): Promise<string> {
  const configured = env.SESSION_SECRET ?? "";
  if (configured !== "") return configured;
  const existing = await db.get<{ secret: string }>(SECRET_KEY);
  if (existing) return existing.secret;
  const fresh = randomBytes(32).toString("base64url");
  if (await db.create(SECRET_KEY, { secret: fresh })) return fresh;
  // another instance made it between our get and create: use theirs
  const winner = await db.get<{ secret: string }>(SECRET_KEY);
  if (!winner) throw new Error("session secret vanished from the store");
  return winner.secret;
}

function mac(secret: string, data: string): Buffer {
  return createHmac("sha256", secret).update(data).digest();
}

export function signToken(secret: string, sub: string, options: SignOptions = {}): string {
  const iat = Math.floor((options.now ?? Date.now()) / 1000);
  const claims: SessionClaims = {
    sub,
    use: options.use ?? "session",
    iat,
    exp: iat + (options.ttlSeconds ?? TOKEN_TTL_SECONDS),
  };
  const payload = Buffer.from(JSON.stringify(claims)).toString("base64url");
  return `${payload}.${mac(secret, payload).toString("base64url")}`;
}

/** The claims of a token this secret signed for this use and that has not expired, else undefined. */
export function verifyToken(
  secret: string,
  token: string,
  use: TokenUse = "session",
  now = Date.now(),
): SessionClaims | undefined {
  const [payload, signature, extra] = token.split(".");
  if (payload === undefined || signature === undefined || extra !== undefined) return undefined;
  const expected = mac(secret, payload);
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  let claims: Partial<SessionClaims>;
  try {
    claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Partial<SessionClaims>;
  } catch {
    return undefined;
  }
  if (typeof claims.sub !== "string" || typeof claims.exp !== "number" || typeof claims.iat !== "number") {
    return undefined;
  }
  if (claims.use !== use || claims.exp * 1000 <= now) return undefined;
  return claims as SessionClaims;
}

/** The signed-in user of a request (Authorization: Bearer <token>); 401 without a valid one. */
export async function requireUser(event: ApiEvent, db: Store): Promise<string> {
  const auth = header(event, "authorization") ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(auth);
  if (!match?.[1]) throw new HttpError(401, "sign in first: Authorization: Bearer <token> required");
  const claims = verifyToken(await sessionSecret(db), match[1]);
  if (!claims) throw new HttpError(401, "session token is invalid or expired");
  return claims.sub;
}
