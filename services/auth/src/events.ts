/** CloudEvents `source` of everything the auth service publishes. */
export const EVENT_SOURCE = 'parley/auth'
