import { type Static, Type as t } from '@sinclair/typebox'

/** RFC 9457 problem details, as every service answers errors. */
export const Problem = t.Object(
  {
    type: t.String({
      description:
        'URI naming the kind of problem, e.g. `https://parley.dev/problems/validation`; stable, so clients branch on it',
    }),
    title: t.String({
      description: 'Short human-readable summary of the kind, the same for every occurrence',
    }),
    status: t.Integer({ description: 'The HTTP status code of this answer' }),
    detail: t.Optional(
      t.String({
        description: 'Human-readable explanation of this occurrence; absent when the title says it all',
      }),
    ),
    instance: t.Optional(t.String({ description: 'The request path that failed; absent when unknown' })),
    errors: t.Optional(
      t.Array(
        t.Object({
          field: t.String({
            description:
              'The offending field: the request part, then its path, dot-separated (e.g. `body.email`, `query.limit`)',
          }),
          message: t.String({ description: 'What is wrong with it, in English' }),
        }),
        {
          description:
            'One entry per invalid field (422 validation, and some 400 and 415 answers); absent otherwise',
        },
      ),
    ),
  },
  { $id: '#/components/schemas/Problem', description: 'RFC 9457 problem details' },
)
export type Problem = Static<typeof Problem>

/** Wraps a list item schema into the page shape every list returns. */
export function Page<T extends ReturnType<typeof t.Object>>(item: T) {
  return t.Object({
    items: t.Array(item, { description: 'This page, in the order the route documents' }),
    nextCursor: t.Union([t.String(), t.Null()], {
      description: 'Opaque; pass as `cursor` for the next page; null on the last page',
    }),
  })
}
