// The page's script: reads the API's URL from config.json (written at build time from the API_URL
// build variable, which the deployment sets from the stack's ApiUrl output) and calls the API.

interface Config {
  apiUrl: string;
}

const TOKEN_KEY = "stagehost-webapp-token";

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`page element #${id} is missing`);
  return found as T;
}

function show(value: unknown): void {
  element<HTMLPreElement>("output").textContent = JSON.stringify(value, null, 2);
}

async function loadConfig(): Promise<Config> {
  const response = await fetch("config.json", { cache: "no-store" });
  const config = (await response.json()) as Partial<Config>;
  if (typeof config.apiUrl !== "string" || config.apiUrl === "") {
    throw new Error("config.json has no apiUrl: build with API_URL set");
  }
  return { apiUrl: config.apiUrl.endsWith("/") ? config.apiUrl : `${config.apiUrl}/` };
}

async function call(config: Config, method: string, path: string, body?: unknown): Promise<unknown> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const init: RequestInit = { method, headers };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(new URL(path, config.apiUrl), init);
  const answer: unknown = await response.json();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(answer)}`);
  return answer;
}

function fields(form: HTMLFormElement): Record<string, string> {
  const out: Record<string, string> = {};
  new FormData(form).forEach((value, key) => {
    out[key] = String(value);
  });
  return out;
}

function onSubmit(id: string, work: (form: HTMLFormElement, submitter: HTMLElement | null) => Promise<unknown>): void {
  const form = element<HTMLFormElement>(id);
  form.addEventListener("submit", (event: SubmitEvent) => {
    event.preventDefault();
    work(form, event.submitter).then(show, (err: unknown) => show({ error: String(err) }));
  });
}

async function refreshWhoami(config: Config): Promise<void> {
  const me = (await call(config, "GET", "auth/me")) as { username: string };
  element("whoami").textContent = `Signed in as ${me.username}.`;
}

async function main(): Promise<void> {
  const config = await loadConfig();
  element("api-url").textContent = config.apiUrl;
  onSubmit("auth-form", async (form, submitter) => {
    const credentials = fields(form);
    if (submitter?.dataset.action === "register") await call(config, "POST", "auth/register", credentials);
    const session = (await call(config, "POST", "auth/login", credentials)) as { token: string };
    sessionStorage.setItem(TOKEN_KEY, session.token);
    await refreshWhoami(config);
    return { signedIn: credentials.username };
  });
  onSubmit("content-form", (form) => call(config, "POST", "content", fields(form)));
  onSubmit("ai-form", (form) => call(config, "POST", "ai/complete", fields(form)));
  if (sessionStorage.getItem(TOKEN_KEY)) await refreshWhoami(config).catch(() => sessionStorage.removeItem(TOKEN_KEY));
}

main().catch((err: unknown) => show({ error: String(err) }));
