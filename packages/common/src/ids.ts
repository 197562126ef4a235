/** Time-ordered UUIDv7: sortable primary keys and event ids. */
export function newId(): string {
  return Bun.randomUUIDv7()
}
