// The API Gateway REST (v1) Lambda proxy integration contract, as far as these handlers use it.
// Declared here rather than taken from @types/aws-lambda to keep the dependency list short.

export interface ApiEvent {
  httpMethod: string;
  path: string;
  resource?: string;
  pathParameters?: Record<string, string | undefined> | null;
  queryStringParameters?: Record<string, string | undefined> | null;
  headers?: Record<string, string | undefined> | null;
  body?: string | null;
  isBase64Encoded?: boolean;
  requestContext?: { stage?: string; requestId?: string } | null;
}

export interface ApiResult {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
}

export type Handler = (event: ApiEvent) => Promise<ApiResult>;

/** An error a handler turns into a response with its status and message. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export function json(statusCode: number, value: unknown): ApiResult {
  return {
    statusCode,
    headers: {
      "Content-Type": "application/json",
      // the frontend is served from another origin (Amplify)
      "Access-Control-Allow-Origin": process.env.CORS_ORIGIN ?? "*",
    },
    body: JSON.stringify(value),
  };
}

/** A header by name, whatever its case (API Gateway passes them as the client sent them). */
export function header(event: ApiEvent, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(event.headers ?? {})) {
    if (key.toLowerCase() === wanted) return value;
  }
  return undefined;
}

/** The request body as a JSON object; 400 when it is missing, malformed or not an object. */
export function jsonBody(event: ApiEvent): Record<string, unknown> {
  if (event.body === undefined || event.body === null || event.body === "") {
    throw new HttpError(400, "request body required (JSON object)");
  }
  const text = event.isBase64Encoded === true ? Buffer.from(event.body, "base64").toString("utf8") : event.body;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new HttpError(400, "request body is not valid JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new HttpError(400, "request body must be a JSON object");
  }
  return parsed as Record<string, unknown>;
}

/** A string field of a body, checked for presence and length. */
export function stringField(body: Record<string, unknown>, name: string, min: number, max: number): string {
  const value = body[name];
  if (typeof value !== "string" || value.length < min || value.length > max) {
    throw new HttpError(400, `'${name}' must be a string of ${min} to ${max} characters`);
  }
  return value;
}

/** The route a request is for: "METHOD /resource", trailing slashes ignored. */
export function routeOf(event: ApiEvent): string {
  const path = (event.resource ?? event.path).replace(/\/+$/, "") || "/";
  return `${event.httpMethod.toUpperCase()} ${path}`;
}

/** One line for a log: an error's message and its cause's (fetch puts the reason there). */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message;
}

/** Runs a handler body, turning HttpError into its response and anything else into a 500. */
export async function respond(work: () => Promise<ApiResult>): Promise<ApiResult> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof HttpError) return json(err.statusCode, { error: err.message });
    console.error("unhandled error:", err);
    return json(500, { error: "internal error" });
  }
}

/** Does a route ("GET /content/abc") fit a route template ("GET /content/{id}")? API Gateway
 * names the template in event.resource; without it (a plain proxy) the path is matched here. */
function fits(template: string, route: string): boolean {
  const want = template.split("/");
  const got = route.split("/");
  return want.length === got.length && want.every((part, i) => part === got[i] || (/^\{\w+\}$/.test(part) && got[i] !== ""));
}

/** A function's handler: each "METHOD /resource" answered by its function, any other with 404,
 * and every error turned into an answer (respond). */
export function router(routes: Record<string, Handler>): Handler {
  return (event) =>
    respond(async () => {
      const route = routeOf(event);
      const work = routes[route] ?? Object.entries(routes).find(([template]) => fits(template, route))?.[1];
      if (!work) throw new HttpError(404, `no route ${route}`);
      return work(event);
    });
}
