// Builds the frontend into dist/: app.js (esbuild bundle of src/frontend/main.ts), index.html, and
// config.json holding the API's URL from the API_URL environment variable (on Amplify, a branch
// variable the deployment sets from the stack's ApiUrl output).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";

const apiUrl = process.env.API_URL ?? "";
if (apiUrl === "") {
  console.warn("build-frontend: API_URL is not set; the page will say so until config.json names the API");
}

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: ["src/frontend/main.ts"],
  bundle: true,
  format: "iife",
  target: "es2020",
  minify: true,
  sourcemap: true,
  outfile: "dist/app.js",
  logLevel: "warning",
});
copyFileSync("src/frontend/index.html", "dist/index.html");
writeFileSync("dist/config.json", `${JSON.stringify({ apiUrl }, null, 2)}\n`);
console.log(`build-frontend: dist/ written (apiUrl ${apiUrl === "" ? "unset" : apiUrl})`);
