// A deliberate lint error (@typescript-eslint/no-explicit-any) for the stagehost demo: linted
// only with PLANT_LINT_ERROR=1 (see eslint.config.js). It type-checks; nothing imports it.
export function planted(value: any): string {
  return String(value);
}
