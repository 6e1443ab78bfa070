// The worked example's handler: what it accepts, what it dead-letters at once, what it retries.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { ConsumeMessage } from 'amqplib'
import { MalformedMessage } from './delivery.ts'
import { type Email, handleEmail, parseEmail } from './emails.ts'

const valid = { to: 'ada@example.com', subject: 'Your order has shipped', text: 'It arrives on Monday.' }

function messageOf(body: string): ConsumeMessage {
  return { content: Buffer.from(body), fields: {}, properties: {} } as ConsumeMessage
}

describe('the emails handler', () => {
  it('hands a valid email to the mailer, with the signal', async () => {
    const sent: Email[] = []
    const signal = new AbortController().signal
    const handle = handleEmail(async (email, given) => {
      assert.equal(given, signal)
      sent.push(email)
    })
    await handle(messageOf(JSON.stringify({ ...valid, extra: 'ignored' })), signal)
    assert.deepEqual(sent, [valid])
  })

  it('lets a failing mailer fail the message, so it is retried', async () => {
    const handle = handleEmail(async () => {
      throw new Error('smtp: 421 try again later')
    })
    await assert.rejects(handle(messageOf(JSON.stringify(valid)), new AbortController().signal), (err: Error) => {
      assert.ok(!(err instanceof MalformedMessage))
      return err.message === 'smtp: 421 try again later'
    })
  })

  it('refuses what it cannot send as MalformedMessage, naming every problem', () => {
    const cases: [string, string][] = [
      ['not json', 'the body is not JSON'],
      ['[1]', 'the body is not a JSON object'],
      ['null', 'the body is not a JSON object'],
      [
        '{}',
        '`to` must be an email address; `subject` must be 1 to 200 characters on one line; `text` must be a string of at most 100000 characters',
      ],
      [JSON.stringify({ ...valid, to: 'ada at example.com' }), '`to` must be an email address'],
      [
        JSON.stringify({ ...valid, subject: 'Hi\r\nBcc: everyone@example.com' }),
        '`subject` must be 1 to 200 characters on one line',
      ],
      [JSON.stringify({ ...valid, subject: '' }), '`subject` must be 1 to 200 characters on one line'],
      [JSON.stringify({ ...valid, text: 'x'.repeat(100_001) }), '`text` must be a string of at most 100000 characters'],
    ]
    for (const [body, problem] of cases) {
      assert.throws(
        () => parseEmail(Buffer.from(body)),
        (err: Error) => err instanceof MalformedMessage && err.message === problem,
        body.slice(0, 60),
      )
    }
  })
})
