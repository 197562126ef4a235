export * from './api'
export * from './events'
export * from './presence'
export * from './roster'
