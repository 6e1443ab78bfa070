import { once } from 'node:events'
import type { Server } from 'node:net'
import type { Address } from './config.ts'

/** listen opens server on addr and resolves once it listens, or rejects with the listen error. */
export async function listen(server: Server, addr: Address): Promise<void> {
  const listening = once(server, 'listening') // rejects on 'error', which a taken port emits
  server.listen({ port: addr.port, host: addr.host || undefined })
  await listening
}

/** describeListenError says in one line why server could not listen on addr, set by the variables named. */
export function describeListenError(err: unknown, { host, port }: Address, names: string): string {
  switch ((err as NodeJS.ErrnoException | undefined)?.code) {
    case 'EADDRINUSE':
      return `cannot listen: port ${port} (${names}) is already in use`
    case 'EACCES':
      return `cannot listen: no permission to use port ${port} (${names})`
    case 'EADDRNOTAVAIL':
      return `cannot listen: ${host} (${names}) is not an address of this machine`
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot listen: ${host} (${names}) does not resolve`
    default:
      return `cannot listen on port ${port} (${names}): ${err instanceof Error ? err.message : String(err)}`
  }
}
