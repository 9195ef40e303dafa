// The sandbox's Lambda runtime for Node.js, one invocation per process (as `sam local
// start-api` runs a fresh container per request): node lambda_runner.js TASK_ROOT HANDLER
// reads the event (JSON) on stdin, loads TASK_ROOT/<module> and calls its exported function
// with (event, context) — async, promise or callback style — and writes the result as JSON on
// stdout. What the handler prints goes to stderr (Lambda sends it to the function's logs, not
// to the caller). A thrown error becomes {"errorType", "errorMessage"} on stdout and exit 1.
"use strict";

const path = require("node:path");

const [, , taskRoot, handlerName] = process.argv;
const out = process.stdout.write.bind(process.stdout);
for (const level of ["log", "info", "debug", "warn", "error", "trace"]) {
  console[level] = (...args) => process.stderr.write(require("node:util").format(...args) + "\n");
}

function finish(result) {
  out(JSON.stringify(result === undefined ? null : result), () => process.exit(0));
}

function fail(err) {
  const e = err instanceof Error ? err : new Error(String(err));
  process.stderr.write(`${e.stack || e.message}\n`);
  out(JSON.stringify({ errorType: e.name || "Error", errorMessage: e.message }), () => process.exit(1));
}

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

async function main() {
  const dot = handlerName.lastIndexOf(".");
  if (dot <= 0) throw new Error(`Bad handler ${handlerName}: expected file.function`);
  const modulePath = path.resolve(taskRoot, handlerName.slice(0, dot));
  const fnName = handlerName.slice(dot + 1);
  let mod;
  try {
    mod = require(modulePath);
  } catch (e) {
    if (e.code === "ERR_REQUIRE_ESM") mod = await import(`${modulePath}.mjs`);
    else throw e;
  }
  const fn = mod[fnName] ?? mod.default?.[fnName];
  if (typeof fn !== "function") {
    throw Object.assign(new Error(`${handlerName} is undefined or not exported`), { name: "Runtime.HandlerNotFound" });
  }
  const event = JSON.parse((await readStdin()) || "null");
  const deadline = Date.now() + Number(process.env.AWS_LAMBDA_FUNCTION_TIMEOUT || 3) * 1000;
  const context = {
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: "$LATEST",
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: process.env.STAGEHOST_REQUEST_ID,
    invokedFunctionArn: process.env.STAGEHOST_FUNCTION_ARN,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    callbackWaitsForEmptyEventLoop: true,
  };
  const result = await new Promise((resolve, reject) => {
    const callback = (err, value) => (err ? reject(err) : resolve(value));
    try {
      const r = fn(event, context, callback);
      if (r && typeof r.then === "function") r.then(resolve, reject);
      else if (fn.length < 3) resolve(r); // a plain function that takes no callback
    } catch (e) {
      reject(e);
    }
  });
  finish(result);
}

main().catch(fail);
