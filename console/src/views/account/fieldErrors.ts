// The service's field violations, placed next to the form fields they name.
import type { FieldViolation } from "../../errors";

export interface Placed<F extends string> {
  /** Each field's sentence. */
  fields: Partial<Record<F, string>>;
  /** Violations of fields the form does not show. */
  unplaced: FieldViolation[];
}

/**
 * Places `violations` by `fieldOf` (the contract's field name → the form's);
 * `plain` rewords descriptions that read oddly to the person.
 */
export function placeViolations<F extends string>(
  violations: FieldViolation[],
  fieldOf: Readonly<Record<string, F>>,
  plain: Readonly<Record<string, string>> = {},
): Placed<F> {
  const fields: Partial<Record<F, string>> = {};
  const unplaced: FieldViolation[] = [];
  for (const violation of violations) {
    const field = fieldOf[violation.field];
    if (field === undefined) unplaced.push(violation);
    else fields[field] = plain[violation.description] ?? sentence(violation.description);
  }
  return { fields, unplaced };
}

/** "must be at least 8 characters" → "Must be at least 8 characters." */
function sentence(description: string): string {
  const text = description.charAt(0).toUpperCase() + description.slice(1);
  return text.endsWith(".") ? text : `${text}.`;
}
