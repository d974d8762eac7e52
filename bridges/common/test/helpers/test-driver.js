// The TEST driver: a stand-in for a WhatsApp library behind the driver interface
// (src/sessions.js), scripted by the tests. It lives with the tests only.
//
// By default a started driver resumes when its session directory holds `creds.json`
// (authenticated, then ready with the stored phone) and otherwise shows a QR; the tests
// then pair it, rotate its QR, make it receive messages, disconnect, log out or fail.

import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * @typedef {object} TestDriverOptions
 * @property {boolean} [auto] emit a QR (or resume) on start (default true)
 * @property {(driver: TestDriver) => unknown} [onStart] runs on start instead of the default
 * @property {boolean} [echo] report each send back as a from_me message before send() returns
 * @property {number} [sendDelayMs]
 */

/**
 * A driver factory whose drivers the tests can reach: `factory.latest(session)` is the
 * session's current driver, `factory.drivers` every driver made so far.
 * @param {TestDriverOptions} [options]
 */
export function testDriverFactory(options = {}) {
  /** @type {TestDriver[]} */
  const drivers = [];
  /** @param {import('../../src/sessions.js').DriverContext} context */
  const factory = (context) => {
    const driver = new TestDriver(context, options);
    drivers.push(driver);
    return driver;
  };
  factory.drivers = drivers;
  /** @param {string} session */
  factory.all = (session) => drivers.filter((d) => d.session === session);
  /**
   * The session's current driver: the last one made that was not stopped (a driver made
   * for a start that a restart overtook is stopped at once, and may be made after the
   * new one).
   * @param {string} session
   */
  factory.latest = (session) => {
    const all = factory.all(session);
    return all.filter((d) => !d.calls.includes('stop')).at(-1) ?? all.at(-1);
  };
  return factory;
}

// Message ids unique across processes too (a restarted bridge must not repeat one, as no
// real library does: dashd drops a repeated id as a duplicate delivery).
const RUN = randomBytes(3).toString('hex');
let ids = 0;

export class TestDriver {
  /**
   * @param {import('../../src/sessions.js').DriverContext} context
   * @param {TestDriverOptions} options
   */
  constructor(context, options) {
    this.context = context;
    this.session = context.session;
    this.dataDir = context.dataDir;
    this.options = options;
    /** @type {string[]} */
    this.calls = [];
    /** @type {any[]} */
    this.sent = [];
    /** Files uploaded to /send-media (`data`), as the driver received them. @type {{to: string, kind: string, data: Buffer, mimeType: string, filename: string | null, caption: string | null}[]} */
    this.uploads = [];
    this.qrCount = 0;
    /** @type {Error | null} */
    this.nextSendError = null;
    this.sendDelayMs = options.sendDelayMs ?? 0;
  }

  async start() {
    this.calls.push('start');
    if (this.options.onStart) {
      await this.options.onStart(this);
      return;
    }
    if (this.options.auto === false) return;
    const creds = await this.readCreds();
    if (creds) {
      this.emit('authenticated');
      this.emit('ready', { phone: creds.phone });
    } else if (this.context.pairingPhone) {
      // Pairing by phone number: a code to type on the phone instead of a QR.
      this.emit('pairing_code', { code: `TEST-${this.context.pairingPhone.slice(-4)}` });
    } else {
      this.showQr();
    }
  }

  async send(/** @type {any} */ message) {
    this.calls.push('send');
    this.sent.push({ ...message, kind: 'text' });
    return this.#answer(message);
  }

  async sendMedia(/** @type {any} */ message) {
    this.calls.push('sendMedia');
    this.sent.push({ ...message, media: true });
    if (Buffer.isBuffer(message.data)) {
      const { to, kind, data, mimeType, filename, caption } = message;
      this.uploads.push({ to, kind, data, mimeType, filename, caption });
    }
    return this.#answer(message);
  }

  async logout() {
    this.calls.push('logout');
  }

  async stop() {
    this.calls.push('stop');
  }

  // ----- what the tests script -----

  /** @param {any} type @param {Record<string, unknown>} [data] */
  emit(type, data) {
    this.context.emit(type, data);
  }

  /** A new QR (the first or a rotation). @param {Record<string, unknown>} [extra] */
  showQr(extra = {}) {
    this.qrCount += 1;
    const qr = `2@TEST-${this.session}-${this.qrCount}`;
    this.emit('qr', { qr, ...extra });
    return qr;
  }

  /** The phone scans: credentials stored, authenticated, ready. */
  async pair(phone = '15551234567') {
    await writeFile(join(this.dataDir, 'creds.json'), JSON.stringify({ phone }));
    this.emit('authenticated');
    this.emit('ready', { phone: `${phone}@c.us` });
  }

  async readCreds() {
    try {
      return JSON.parse(await readFile(join(this.dataDir, 'creds.json'), 'utf8'));
    } catch {
      return null;
    }
  }

  disconnect(reason = 'connection lost') {
    this.emit('disconnected', { reason, loggedOut: false });
  }

  logoutFromPhone(reason = 'LOGOUT') {
    this.emit('disconnected', { reason, loggedOut: true });
  }

  /** @param {string} reason */
  fail(reason) {
    this.emit('failed', { reason });
  }

  /** A message from a contact (defaults: text "hi" from 15557654321). @param {Record<string, unknown>} [fields] */
  receive(fields = {}) {
    ids += 1;
    const message = {
      message_id: `IN-${RUN}-${ids}`,
      chat_id: '15557654321@c.us',
      from_me: false,
      timestamp_s: 1767225600,
      type: 'chat',
      text: 'hi',
      push_name: 'Maria',
      ...fields,
    };
    this.emit('message', message);
    return message;
  }

  /** @param {any} message */
  async #answer(message) {
    if (this.sendDelayMs) await new Promise((resolve) => setTimeout(resolve, this.sendDelayMs));
    if (this.nextSendError) {
      const error = this.nextSendError;
      this.nextSendError = null;
      throw error;
    }
    ids += 1;
    const id = `OUT-${RUN}-${ids}`;
    if (this.options.echo) {
      this.emit('message', { message_id: id, chat_id: `${message.to}@c.us`, from_me: true, type: 'chat', text: message.text ?? '' });
    }
    return id;
  }
}
