// Authentication: POST /auth/register, POST /auth/login (a signed session token), GET /auth/me.
import { HttpError, json, jsonBody, router, stringField, type ApiEvent, type ApiResult } from "../../lib/http";
import { checkPassword, hashPassword } from "../../lib/password";
import { requireUser, sessionSecret, signToken, TOKEN_TTL_SECONDS } from "../../lib/session";
import { store } from "../../lib/store";

interface User {
  username: string;
  passwordHash: string;
  createdAt: string;
}

const USERNAME = /^[a-z0-9][a-z0-9_.-]{2,31}$/;

function credentials(event: ApiEvent): { username: string; password: string } {
  const body = jsonBody(event);
  const username = stringField(body, "username", 3, 32).toLowerCase();
  if (!USERNAME.test(username)) {
    throw new HttpError(400, "'username' may hold letters, digits, '_', '.' and '-' and starts with a letter or digit");
  }
  return { username, password: stringField(body, "password", 8, 128) };
}

async function register(event: ApiEvent): Promise<ApiResult> {
  const { username, password } = credentials(event);
  const user: User = { username, passwordHash: await hashPassword(password), createdAt: new Date().toISOString() };
  if (!(await store().create(`user#${username}`, user))) throw new HttpError(409, `user '${username}' already exists`);
  return json(201, { username, createdAt: user.createdAt });
}

async function login(event: ApiEvent): Promise<ApiResult> {
  const { username, password } = credentials(event);
  const user = await store().get<User>(`user#${username}`);
  // the same answer for an unknown user and a wrong password
  if (!user || !(await checkPassword(password, user.passwordHash))) {
    throw new HttpError(401, "wrong username or password");
  }
  const token = signToken(await sessionSecret(store()), username);
  return json(200, { token, tokenType: "Bearer", expiresIn: TOKEN_TTL_SECONDS });
}

async function me(event: ApiEvent): Promise<ApiResult> {
  const username = await requireUser(event, store());
  const user = await store().get<User>(`user#${username}`);
  if (!user) throw new HttpError(401, "the session's user no longer exists");
  return json(200, { username: user.username, createdAt: user.createdAt });
}

export const handler = router({
  "POST /auth/register": register,
  "POST /auth/login": login,
  "GET /auth/me": me,
});
