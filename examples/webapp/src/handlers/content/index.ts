// Content: POST /content (signed-in users) stores an item; GET /content/{id} reads it back.
import { randomUUID } from "node:crypto";
import { HttpError, json, jsonBody, router, stringField, type ApiEvent, type ApiResult } from "../../lib/http";
import { requireUser } from "../../lib/session";
import { store } from "../../lib/store";

export interface ContentItem {
  id: string;
  title: string;
  body: string;
  author: string;
  createdAt: string;
}

const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function create(event: ApiEvent): Promise<ApiResult> {
  const author = await requireUser(event, store());
  const body = jsonBody(event);
  const item: ContentItem = {
    id: randomUUID(),
    title: stringField(body, "title", 1, 200),
    body: stringField(body, "body", 1, 10_000),
    author,
    createdAt: new Date().toISOString(),
  };
  await store().put(`content#${item.id}`, item);
  return json(201, item);
}

async function read(event: ApiEvent): Promise<ApiResult> {
  // the path parameter, or the last segment when the caller passes only the path
  const id = event.pathParameters?.id ?? event.path.replace(/\/+$/, "").split("/").pop() ?? "";
  if (!ID.test(id)) throw new HttpError(400, "content id must be a UUID");
  const item = await store().get<ContentItem>(`content#${id}`);
  if (!item) throw new HttpError(404, `no content ${id}`);
  return json(200, item);
}

export const handler = router({
  "POST /content": create,
  "GET /content/{id}": read,
});
