// Runs the whole app on this machine, the way the stagehost sandbox serves a deployment: the
// functions bundled with esbuild and called with API Gateway (REST, v1) proxy events, the built
// frontend, and stub OAuth and AI providers that follow the contract in README.md. Items go to
// a file store in a temporary folder. Prints API_URL and APP_URL; stop it with Ctrl-C.
//   node scripts/serve-local.mjs [--port N]     (npm run serve:local)
import { build } from "esbuild";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";

// The routes of template.yaml: function -> [method, path]. Checked against the template below.
const ROUTES = {
  auth: [["POST", "/auth/register"], ["POST", "/auth/login"], ["GET", "/auth/me"]],
  content: [["POST", "/content"], ["GET", "/content/{id}"]],
  oauth: [["GET", "/oauth/start"], ["GET", "/oauth/callback"]],
  ai: [["POST", "/ai/complete"]],
};
const STAGE = "Prod";
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".json": "application/json", ".map": "application/json" };

function checkTemplate() {
  const text = readFileSync("template.yaml", "utf8");
  const declared = [...text.matchAll(/Path: (\S+)\s+Method: (\w+)/g)].map((m) => `${m[2].toUpperCase()} ${m[1]}`).sort();
  const served = Object.values(ROUTES).flat().map(([method, path]) => `${method} ${path}`).sort();
  if (JSON.stringify(declared) !== JSON.stringify(served)) {
    throw new Error(`serve-local.mjs: its routes differ from template.yaml's:\n  template ${declared.join(", ")}\n  served   ${served.join(", ")}`);
  }
}

async function bundle(outdir) {
  const handlers = {};
  const load = createRequire(import.meta.url);
  for (const name of Object.keys(ROUTES)) {
    const outfile = join(outdir, name, "index.js");
    await build({ entryPoints: [`src/handlers/${name}/index.ts`], bundle: true, platform: "node", target: "node20", format: "cjs", outfile, logLevel: "warning" });
    handlers[name] = load(outfile).handler;
  }
  return handlers;
}

function match(method, path) {
  for (const [fn, routes] of Object.entries(ROUTES)) {
    for (const [m, template] of routes) {
      if (m !== method) continue;
      const names = [];
      const pattern = new RegExp(`^${template.replace(/\{(\w+)\}/g, (_, n) => (names.push(n), "([^/]+)"))}$`);
      const found = pattern.exec(path);
      if (found) return { fn, resource: template, params: Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(found[i + 1])])) };
    }
  }
  return undefined;
}

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
  });
}

function send(res, status, body, headers = { "Content-Type": "application/json" }) {
  res.writeHead(status, headers);
  res.end(typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body));
}

// The stub providers, as README.md's "Stub providers" section describes them.
async function stub(req, res, path) {
  const body = await readBody(req);
  if (path === "/stub/oauth/token" && req.method === "POST") {
    const form = new URLSearchParams(body);
    if (form.get("grant_type") === "authorization_code" && form.get("code") === "sandbox-code") {
      return send(res, 200, { access_token: "sandbox-access-token", token_type: "Bearer", expires_in: 3600, scope: "profile" });
    }
    return send(res, 400, { error: "invalid_grant" });
  }
  if (path === "/stub/ai/complete" && req.method === "POST") {
    let prompt;
    try {
      prompt = JSON.parse(body).prompt;
    } catch {
      prompt = undefined;
    }
    if (typeof prompt !== "string" || prompt === "") return send(res, 400, { error: "prompt required" });
    return send(res, 200, { text: `Sandbox completion for: ${prompt}` });
  }
  return send(res, 404, { error: "no such stub" });
}

async function main() {
  checkTemplate();
  const portArg = process.argv.indexOf("--port");
  const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
  const work = mkdtempSync(join(tmpdir(), "webapp-local-"));
  const handlers = await bundle(join(work, "functions"));
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? "/", "http://local");
      const path = url.pathname;
      if (path.startsWith("/stub/")) return await stub(req, res, path);
      if (path === `/${STAGE}` || path.startsWith(`/${STAGE}/`)) {
        const apiPath = path.slice(STAGE.length + 1) || "/";
        if (req.method === "OPTIONS") {
          return send(res, 204, "", { "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "Content-Type,Authorization", "Access-Control-Allow-Methods": "GET,POST,OPTIONS" });
        }
        const route = match(req.method ?? "", apiPath);
        if (!route) return send(res, 403, { message: "Missing Authentication Token" }); // API Gateway's answer for an unknown route
        const body = await readBody(req);
        const result = await handlers[route.fn]({
          httpMethod: req.method, path: apiPath, resource: route.resource,
          pathParameters: Object.keys(route.params).length ? route.params : null,
          queryStringParameters: url.searchParams.size ? Object.fromEntries(url.searchParams) : null,
          headers: Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(",") : v])),
          body: body === "" ? null : body, isBase64Encoded: false,
          requestContext: { stage: STAGE, requestId: `local-${Date.now()}` },
        });
        return send(res, result.statusCode, result.body, result.headers);
      }
      const file = join("dist", path === "/" ? "index.html" : path.slice(1));
      if (!file.startsWith("dist") || !existsSync(file)) return send(res, 404, "not found", { "Content-Type": "text/plain" });
      return send(res, 200, readFileSync(file), { "Content-Type": TYPES[extname(file)] ?? "application/octet-stream" });
    } catch (err) {
      console.error(err);
      return send(res, 502, { message: "Internal server error" });
    }
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  Object.assign(process.env, {
    STORAGE: "file", STORAGE_DIR: join(work, "store"), TABLE_NAME: "LocalTable", STAGE: "development",
    OAUTH_TOKEN_URL: `${base}/stub/oauth/token`, OAUTH_CLIENT_ID: "stagehost-webapp",
    AI_API_URL: `${base}/stub/ai/complete`,
  });
  if (!existsSync("dist/index.html")) console.warn("serve-local: dist/ is not built; run `API_URL=... npm run build` for the frontend");
  console.log(`API_URL=${base}/${STAGE}/`);
  console.log(`APP_URL=${base}/`);
}

main().catch((err) => {
  console.error(err.message ?? err);
  process.exit(1);
});
