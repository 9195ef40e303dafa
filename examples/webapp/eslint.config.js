// ESLint flat config. src/planted/ holds one deliberate lint error for the stagehost demo (a failed
// check reaching the deployment checklist): it is linted only when PLANT_LINT_ERROR=1.
const js = require("@eslint/js");
const { defineConfig } = require("eslint/config");
const tseslint = require("typescript-eslint");

const plant = process.env.PLANT_LINT_ERROR === "1";

const nodeGlobals = {
  AbortSignal: "readonly",
  Buffer: "readonly",
  URL: "readonly",
  URLSearchParams: "readonly",
  console: "readonly",
  fetch: "readonly",
  process: "readonly",
};

module.exports = defineConfig(
  {
    ignores: ["node_modules/", ".aws-sam/", ".build/", "dist/", "reports/", ...(plant ? [] : ["src/planted/"])],
  },
  js.configs.recommended,
  {
    files: ["**/*.ts"],
    extends: [tseslint.configs.recommended],
    rules: {
      "@typescript-eslint/consistent-type-imports": "error",
      eqeqeq: "error",
    },
  },
  {
    files: ["**/*.mjs"],
    languageOptions: { sourceType: "module", globals: nodeGlobals },
  },
  {
    files: ["eslint.config.js"],
    languageOptions: { sourceType: "commonjs", globals: { ...nodeGlobals, module: "writable", require: "readonly" } },
  },
);
