// The queues this service consumes, each with its handler, in one place, as routes.ts lists the
// routes. The add-on declares each queue listed here (and its dead-letter queue) and consumes it.
import { handleEmail, newLogMailer } from './emails.ts'
import type { HandlerMakers } from './delivery.ts'

/** handlers maps each queue to the maker of its handler, which gets the service's logger. */
export const handlers: HandlerMakers = {
  emails: ({ log }) => handleEmail(newLogMailer(log)),
}
