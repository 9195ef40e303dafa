// Folder chores for npm scripts, portable where `rm -rf`/`mkdir -p` are not:
//   node scripts/dirs.mjs --clean DIR... --make DIR...
import { mkdirSync, rmSync } from "node:fs";

let mode = "";
for (const arg of process.argv.slice(2)) {
  if (arg === "--clean" || arg === "--make") mode = arg;
  else if (mode === "--clean") rmSync(arg, { recursive: true, force: true });
  else if (mode === "--make") mkdirSync(arg, { recursive: true });
  else throw new Error(`dirs.mjs: '${arg}' needs --clean or --make before it`);
}
