import { Type as t } from '@sinclair/typebox'

/**
 * A display name as both auth (`POST /auth/register`) and the user service (`PATCH /users/me`)
 * accept it: one rule, so a name one refuses can never come in through the other. Validate
 * the value after `normaliseDisplayName`: the length counts the trimmed name, and "   "
 * is empty. Control characters (CR, LF, tab, NUL, DEL…) are refused because the name is shown
 * on one line everywhere (and PostgreSQL cannot store NUL in text at all).
 */
export const DisplayName = t.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[^\\u0000-\\u001f\\u007f]*$',
  description: 'Trimmed first; 1–64 characters, no control characters',
})

/** The trimming both services apply before validating a display name. */
export function normaliseDisplayName(value: string): string {
  return value.trim()
}
