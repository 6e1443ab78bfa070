// The worked example of a queue handler: an email to send, as a JSON message on the `emails` queue,
// checked, then handed to a mailer. Replace the log mailer with your mail provider's client.
import { type Handler, type Logger, MalformedMessage } from './delivery.ts'

/** Email is the body of a message on the `emails` queue. */
export interface Email {
  to: string
  subject: string
  text: string
}

/**
 * Mailer sends one email. It rejects when it could not, and the message is retried; it may be
 * called twice for one email (RabbitMQ delivers at least once: README.md, Delivery), so a mailer
 * that must not send twice passes the message id to its provider as an idempotency key.
 */
export type Mailer = (email: Email, signal: AbortSignal) => Promise<void>

/** handleEmail returns the handler of the `emails` queue: parse, then send. */
export function handleEmail(send: Mailer): Handler {
  return async (message, signal) => send(parseEmail(message.content), signal)
}

/**
 * parseEmail reads an Email from a message body, JSON in UTF-8. It throws a MalformedMessage
 * naming every problem, and the message is dead-lettered at once: a retry would read the same bytes.
 */
export function parseEmail(content: Buffer): Email {
  let body: unknown
  try {
    body = JSON.parse(content.toString('utf8'))
  } catch {
    throw new MalformedMessage('the body is not JSON')
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new MalformedMessage('the body is not a JSON object')
  }
  const { to, subject, text } = body as Record<string, unknown>
  const problems = [
    // One @, no spaces: the mail provider checks the rest, and bounces are its business.
    typeof to === 'string' && /^[^\s@]{1,64}@[^\s@]{1,189}$/.test(to) ? '' : '`to` must be an email address',
    // A line break in a subject would start a new mail header.
    typeof subject === 'string' && /^[^\r\n]{1,200}$/.test(subject)
      ? ''
      : '`subject` must be 1 to 200 characters on one line',
    typeof text === 'string' && text.length <= 100_000 ? '' : '`text` must be a string of at most 100000 characters',
  ].filter((problem) => problem !== '')
  if (problems.length > 0) throw new MalformedMessage(problems.join('; '))
  return { to: to as string, subject: subject as string, text: text as string }
}

/** newLogMailer returns a Mailer that sends nothing and logs the recipient's domain: a stand-in. */
export function newLogMailer(log: Logger): Mailer {
  return async (email) => {
    // The domain, not the address: a log line is no place for personal data.
    log.info({ toDomain: email.to.split('@')[1], subjectLength: email.subject.length }, 'email not sent: log mailer')
  }
}
