/** Markup that is already safe to embed; only `html` and `raw` make one. */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value
  }
}

type Interpolation = string | number | SafeHtml | readonly SafeHtml[]

function render(value: Interpolation): string {
  if (value instanceof SafeHtml) return value.value
  if (Array.isArray(value)) return value.map(render).join('')
  return Bun.escapeHTML(String(value))
}

/**
 * Tagged template for email markup: every interpolated value is HTML-escaped unless it is
 * itself `SafeHtml`, so a template cannot forget to escape a display name or a message.
 */
export function html(strings: TemplateStringsArray, ...values: Interpolation[]): SafeHtml {
  return new SafeHtml(strings.reduce((out, chunk, index) => out + render(values[index - 1] ?? '') + chunk))
}

/** One line of header-safe text: control characters (CR, LF, tabs…) and line separators become spaces. */
export function singleLine(value: string): string {
  return value
    .replace(/[\p{Cc}\u2028\u2029]+/gu, ' ')
    .replace(/ {2,}/g, ' ')
    .trim()
}
