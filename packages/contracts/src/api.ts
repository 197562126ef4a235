import { type Static, Type as t } from '@sinclair/typebox'

/** RFC 9457 problem details, as every service answers errors. */
export const Problem = t.Object(
  {
    type: t.String(),
    title: t.String(),
    status: t.Integer(),
    detail: t.Optional(t.String()),
    instance: t.Optional(t.String()),
    errors: t.Optional(
      t.Array(
        t.Object({
          field: t.String({ description: 'JSON pointer-like path of the offending field, e.g. /body/email' }),
          message: t.String(),
        }),
      ),
    ),
  },
  { $id: '#/components/schemas/Problem' },
)
export type Problem = Static<typeof Problem>

/** Wraps a list item schema into the page shape every list returns. */
export function Page<T extends ReturnType<typeof t.Object>>(item: T) {
  return t.Object({
    items: t.Array(item),
    nextCursor: t.Union([t.String(), t.Null()], {
      description: 'Opaque; pass as `cursor` for the next page',
    }),
  })
}
