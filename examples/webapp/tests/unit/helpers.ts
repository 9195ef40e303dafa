// Shared by the unit tests: events as API Gateway sends them, a store in a temporary folder, and
// a stub HTTP server on 127.0.0.1 for the providers the handlers call.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ApiEvent, ApiResult, Handler } from "../../src/lib/http";
import { resetStore } from "../../src/lib/store";

export interface EventOptions {
  body?: unknown;
  headers?: Record<string, string>;
  query?: Record<string, string>;
  pathParameters?: Record<string, string>;
  resource?: string;
  token?: string;
}

export function event(method: string, path: string, options: EventOptions = {}): ApiEvent {
  const headers: Record<string, string> = { Host: "api.test", ...options.headers };
  if (options.token !== undefined) headers.Authorization = `Bearer ${options.token}`;
  const body = options.body === undefined ? null : typeof options.body === "string" ? options.body : JSON.stringify(options.body);
  return {
    httpMethod: method,
    path,
    resource: options.resource ?? path,
    pathParameters: options.pathParameters ?? null,
    queryStringParameters: options.query ?? null,
    headers,
    body,
    isBase64Encoded: false,
    requestContext: { stage: "Prod" },
  };
}

export interface Answer {
  status: number;
  body: Record<string, unknown>;
  result: ApiResult;
}

export async function invoke(handler: Handler, ev: ApiEvent): Promise<Answer> {
  const result = await handler(ev);
  return { status: result.statusCode, body: JSON.parse(result.body) as Record<string, unknown>, result };
}

/** Points the handlers at a fresh file store; returns its folder's remover. */
export function useTempStore(): () => void {
  const dir = mkdtempSync(join(tmpdir(), "webapp-unit-"));
  process.env.STORAGE = "file";
  process.env.STORAGE_DIR = dir;
  process.env.TABLE_NAME = "UnitTable";
  delete process.env.SESSION_SECRET;
  resetStore();
  return () => rmSync(dir, { recursive: true, force: true });
}

export interface Received {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

export interface StubServer {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

/** An HTTP server on a free 127.0.0.1 port answering with `reply`, recording each request. */
export async function stubServer(
  reply: (request: Received, response: ServerResponse) => void,
): Promise<StubServer> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const request = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString("utf8") };
      received.push(request);
      reply(request, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}

export function sendJson(response: ServerResponse, status: number, value: unknown): void {
  response.writeHead(status, { "Content-Type": "application/json" });
  response.end(JSON.stringify(value));
}

/** Registers a user and signs in; returns the session token. */
export async function signedIn(auth: Handler, username = "alice", password = "correct horse battery"): Promise<string> {
  const registered = await invoke(auth, event("POST", "/auth/register", { body: { username, password } }));
  if (registered.status !== 201) throw new Error(`register: ${registered.status} ${JSON.stringify(registered.body)}`);
  const login = await invoke(auth, event("POST", "/auth/login", { body: { username, password } }));
  if (login.status !== 200 || typeof login.body.token !== "string") throw new Error(`login: ${login.status}`);
  return login.body.token;
}
