export * from './bus'
export { assertCloudEvent, buildEvent } from './envelope'
