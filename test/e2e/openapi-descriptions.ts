/**
 * What an OpenAPI document leaves undescribed: operations without a summary or description,
 * parameters and responses without a description, and every property of a request or response
 * schema (followed through `$ref`, items, unions and nesting) without one. Swagger UI and
 * generated clients show these texts; an empty one leaves a user guessing.
 */

type Node = { [key: string]: unknown }

const METHODS = new Set(['get', 'head', 'post', 'put', 'patch', 'delete', 'options'])

function isNode(value: unknown): value is Node {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function text(value: unknown): boolean {
  return typeof value === 'string' && value.trim().length > 0
}

export function undescribed(document: Node): string[] {
  const missing: string[] = []
  const components =
    isNode(document.components) && isNode(document.components.schemas) ? document.components.schemas : {}
  const target = (ref: string): Node | undefined => {
    const found = components[ref.split('/').at(-1) ?? '']
    return isNode(found) ? found : undefined
  }

  // Each component is checked once, under the first place it is met.
  const visited = new Set<string>()
  const walk = (schema: unknown, where: string): void => {
    if (!isNode(schema)) return
    if (typeof schema.$ref === 'string') {
      if (visited.has(schema.$ref)) return
      visited.add(schema.$ref)
      walk(target(schema.$ref), where)
      return
    }
    for (const key of ['anyOf', 'oneOf', 'allOf'])
      if (Array.isArray(schema[key])) for (const branch of schema[key]) walk(branch, where)
    if (schema.items) walk(schema.items, `${where}[]`)
    if (isNode(schema.additionalProperties)) walk(schema.additionalProperties, `${where}.*`)
    if (!isNode(schema.properties)) return
    for (const [name, property] of Object.entries(schema.properties)) {
      if (!isNode(property)) continue
      const referenced = typeof property.$ref === 'string' ? target(property.$ref) : undefined
      if (!text(property.description) && !text(referenced?.description)) missing.push(`${where}.${name}`)
      walk(property, `${where}.${name}`)
    }
  }
  const walkContent = (content: unknown, where: string) => {
    if (!isNode(content)) return
    for (const media of Object.values(content)) if (isNode(media)) walk(media.schema, where)
  }

  const paths = isNode(document.paths) ? document.paths : {}
  for (const [path, item] of Object.entries(paths)) {
    if (!isNode(item)) continue
    for (const [method, operation] of Object.entries(item)) {
      if (!METHODS.has(method) || !isNode(operation)) continue
      const id = `${method.toUpperCase()} ${path}`
      if (!text(operation.summary)) missing.push(`${id}: summary`)
      if (!text(operation.description)) missing.push(`${id}: description`)
      for (const parameter of Array.isArray(operation.parameters) ? operation.parameters : [])
        if (isNode(parameter) && !text(parameter.description))
          missing.push(`${id}: ${String(parameter.in)}.${String(parameter.name)}`)
      if (isNode(operation.requestBody)) walkContent(operation.requestBody.content, `${id} body`)
      for (const [status, response] of Object.entries(
        isNode(operation.responses) ? operation.responses : {},
      )) {
        if (!isNode(response)) continue
        if (!text(response.description)) missing.push(`${id} ${status}: description`)
        walkContent(response.content, `${id} ${status}`)
      }
    }
  }
  return missing
}
