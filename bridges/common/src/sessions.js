// Sessions of a bridge and their state machine (docs/bridges.md, `GET /status`):
//
//   initializing → qr → authenticated → ready
//        ↑          ↓          ↓          ↓
//        └──── disconnected (reconnect with exponential backoff, capped) ←┘
//   any → logged_out (unpaired from the phone: credentials deleted, waits for a start)
//   any → failed     (cannot go on without the operator: waits for a start)
//   any → initializing (a restart: a new driver at once, credentials kept)
//
// One session is one WhatsApp account, driven by one driver instance at a time (the
// library behind the driver interface below). A reconnection stops the driver and makes
// a new one with the factory; events of a driver that was stopped are ignored. The list
// of sessions is kept in `<dataDir>/sessions.json` and restored at start; a session's
// credentials live in `<dataDir>/sessions/<name>/`, the driver's own directory.

import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { e164 } from './address.js';
import { BridgeError } from './errors.js';
import { readJsonFile, SerialQueue, writeFileAtomic } from './files.js';
import { silentLogger } from './log.js';

/** The states, in the order of a normal start. */
export const SESSION_STATES = Object.freeze(['initializing', 'qr', 'authenticated', 'ready', 'disconnected', 'logged_out', 'failed']);

/** States a session stays in until someone starts it again. */
const TERMINAL = new Set(['logged_out', 'failed']);
/** States of a running session that is not paired yet. */
const UNPAIRED = new Set(['initializing', 'qr', 'disconnected']);

/** Session names: URL path segments and whatsapp-web.js LocalAuth client ids. */
export const SESSION_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * @typedef {'initializing' | 'qr' | 'authenticated' | 'ready' | 'disconnected' | 'logged_out' | 'failed'} SessionStateName
 */

/**
 * What a driver reports, through `emit(type, data)`:
 *
 * - `qr` `{qr, expires_at?, ttl_ms?}`: a QR to scan, the raw string (`2@...`), never a
 *   PNG; each rotation is a new `qr`. Without an expiry the bridge assumes 60 s.
 * - `pairing_code` `{code, expires_at?, ttl_ms?}`: the code to type on the phone
 *   (when the session was started with a pairing phone and the library supports it).
 * - `authenticated` `{}`: scanned (or credentials accepted), loading.
 * - `ready` `{phone}`: can send; `phone` is the paired number (digits, `+digits` or a JID).
 * - `disconnected` `{reason, loggedOut}`: the connection is gone. With `loggedOut: true`
 *   the phone unpaired the session (the bridge deletes its credentials and waits);
 *   otherwise the bridge stops the driver and reconnects with a new one, after a backoff.
 * - `failed` `{reason}`: cannot go on without the operator (auth failure...).
 * - `message` `{message_id, chat_id, sender_id, phone?, lid?, from_me, timestamp_s, type,
 *   text, has_media, media?, reply_id?, location?, push_name?, is_group}`: normalised as
 *   docs/bridges.md says; `media.data` (bytes or base64) is stored and served by the
 *   bridge, which sets `media.url`.
 * - `ack` `{id, ack, chat_id?, timestamp_s?, error?}`: `ack` a contract name or a
 *   whatsapp-web.js number (`-1`...`4`).
 * - `lid_mapping` `{lid, phone}`: the library learned that a LID and a phone are one user
 *   (kept in the LID map; posted to dashd as `lid_mapping` when new or changed).
 *
 * @typedef {'qr' | 'pairing_code' | 'authenticated' | 'ready' | 'disconnected' | 'failed' | 'message' | 'ack' | 'lid_mapping'} DriverEventType
 * @typedef {(type: DriverEventType, data?: Record<string, any>) => void} DriverEmit
 */

/**
 * What the bridge gives a driver it creates.
 * @typedef {object} DriverContext
 * @property {string} session the session name
 * @property {string} dataDir the session's own directory (credentials, browser profile), created
 * @property {DriverEmit} emit
 * @property {string} library
 * @property {string | null} pairingPhone digits of the phone to pair by code instead of QR, if asked
 * @property {string} chromiumPath the browser for puppeteer-based libraries
 * @property {import('./log.js').Logger} log
 */

/**
 * A driver: one WhatsApp Web session of one library. Every method may be async.
 * Errors thrown by `send`/`sendMedia` answer as they are when they are
 * {@link BridgeError}s (`invalid_recipient`, `rate_limited`...), else 500 `internal`.
 * @typedef {object} Driver
 * @property {() => Promise<void> | void} start connect (resume from credentials in `dataDir`
 *   or produce QRs); may resolve before the session is ready. Rejecting counts as a
 *   disconnection (retried), or as `failed` when the error has `fatal: true`.
 * @property {(message: {to: string, text: string, replyTo: string | null}) => Promise<string> | string} send
 *   `to` is contract digits or a LID JID (see address.js `recipientJid`); resolves with the
 *   message id that `ack` events and echoes carry.
 * @property {(message: MediaMessage) => Promise<string> | string} sendMedia
 * @property {() => Promise<void> | void} logout unpair on WhatsApp (the bridge deletes `dataDir` afterwards)
 * @property {() => Promise<void> | void} stop release everything (browser, socket) without unpairing
 */

/**
 * What `sendMedia` receives: exactly one of `url` (a link the driver or its library
 * downloads) and `data` (the file itself, uploaded to the bridge), the other null.
 * With `data`, `mimeType` is always set.
 * @typedef {object} MediaMessage
 * @property {string} to contract digits or a LID JID
 * @property {'image' | 'video' | 'audio' | 'document'} kind
 * @property {string | null} url
 * @property {Buffer | null} data
 * @property {string | null} caption
 * @property {string | null} filename
 * @property {string | null} mimeType
 */

/**
 * @typedef {(context: DriverContext) => Driver | Promise<Driver>} DriverFactory
 */

/**
 * @typedef {object} SessionStatus
 * @property {string} session
 * @property {SessionStateName} state
 * @property {string | null} phone
 * @property {string | null} reason
 * @property {string} since RFC 3339
 * @property {string} [pairing_code] while a pairing code waits to be typed
 */

/**
 * @typedef {object} SessionTimings
 * @property {number} [reconnectMinMs] first reconnection delay (1 s)
 * @property {number} [reconnectMaxMs] longest reconnection delay (60 s)
 * @property {number} [startTimeoutMs] a started driver must show a QR, a pairing code or
 *   authenticate within this time, or it is restarted (3 min)
 * @property {number} [stopTimeoutMs] bound on a driver's stop() (10 s)
 * @property {number} [logoutTimeoutMs] bound on a driver's logout() (10 s)
 * @property {number} [qrTtlMs] a QR's lifetime when the driver names none (60 s)
 * @property {number} [pairingCodeTtlMs] a pairing code's lifetime when the driver names none (3 min)
 */

/**
 * @typedef {object} Session
 * @property {string} name
 * @property {SessionStateName} state
 * @property {string | null} phone
 * @property {string | null} reason
 * @property {number} since ms
 * @property {string} createdAt
 * @property {{value: string, expiresAt: number} | null} qr
 * @property {{code: string, expiresAt: number} | null} pairing
 * @property {string | null} pairingPhone
 * @property {Driver | null} driver
 * @property {number} generation bumped whenever the current driver is let go
 * @property {number} attempts reconnections since the last `ready`
 * @property {NodeJS.Timeout | null} reconnectTimer
 * @property {NodeJS.Timeout | null} startTimer
 * @property {Promise<void> | null} stopping the previous driver's stop (and credential removal)
 */

/** RFC 3339 in UTC without fractions. @param {number} ms */
export function rfc3339(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export class SessionManager {
  #library;
  #factory;
  #dataDir;
  #maxSessions;
  #reconnectMaxAttempts;
  #chromiumPath;
  #log;
  #now;
  #onEvent;
  #onDriverData;
  #timings;
  /** @type {Map<string, Session>} */
  #sessions = new Map();
  #writes = new SerialQueue();
  #closed = false;

  /**
   * @param {{
   *   library: string,
   *   driverFactory: DriverFactory,
   *   dataDir: string,
   *   maxSessions?: number,
   *   reconnectMaxAttempts?: number,
   *   chromiumPath?: string,
   *   log?: import('./log.js').Logger,
   *   timings?: SessionTimings,
   *   now?: () => number,
   *   onEvent: (session: string, event: 'state' | 'qr' | 'pairing_code', data: Record<string, unknown>) => void,
   *   onDriverData: (session: string, type: 'message' | 'ack' | 'lid_mapping', data: Record<string, any>) => void,
   * }} options
   */
  constructor(options) {
    this.#library = options.library;
    this.#factory = options.driverFactory;
    this.#dataDir = options.dataDir;
    this.#maxSessions = options.maxSessions ?? 10;
    this.#reconnectMaxAttempts = options.reconnectMaxAttempts ?? 0;
    this.#chromiumPath = options.chromiumPath ?? '/usr/bin/chromium';
    this.#log = options.log ?? silentLogger;
    this.#now = options.now ?? Date.now;
    this.#onEvent = options.onEvent;
    this.#onDriverData = options.onDriverData;
    this.#timings = {
      reconnectMinMs: 1000,
      reconnectMaxMs: 60000,
      startTimeoutMs: 180000,
      stopTimeoutMs: 10000,
      logoutTimeoutMs: 10000,
      qrTtlMs: 60000,
      pairingCodeTtlMs: 180000,
      ...options.timings,
    };
  }

  get #file() {
    return join(this.#dataDir, 'sessions.json');
  }

  /** @param {string} name */
  #sessionDir(name) {
    return join(this.#dataDir, 'sessions', name);
  }

  /**
   * Loads `sessions.json` and starts again every session that was running; sessions that
   * were logged out or failed come back in that state, without a driver.
   */
  async restore() {
    const stored = await readJsonFile(this.#file, { version: 1, sessions: [] });
    const entries = Array.isArray(stored.sessions) ? stored.sessions : [];
    /** @type {Session[]} */
    const toStart = [];
    for (const entry of entries) {
      if (typeof entry?.name !== 'string' || !SESSION_NAME.test(entry.name) || this.#sessions.has(entry.name)) continue;
      const session = this.#record(entry.name, typeof entry.created_at === 'string' ? entry.created_at : rfc3339(this.#now()));
      session.phone = e164(entry.phone);
      if (TERMINAL.has(entry.state)) {
        session.state = entry.state;
        session.reason = typeof entry.reason === 'string' ? entry.reason : null;
      } else if (toStart.length < this.#maxSessions) {
        toStart.push(session);
      } else {
        session.state = 'failed';
        session.reason = `not restarted: more sessions than BRIDGE_MAX_SESSIONS=${this.#maxSessions}`;
      }
    }
    for (const session of toStart) {
      this.#onEvent(session.name, 'state', this.#stateData(session));
      await this.#launch(session);
    }
    if (this.#sessions.size > 0) this.#log.info('sessions restored', { sessions: this.#sessions.size, started: toStart.length });
    await this.#persist();
  }

  /** @param {string} name */
  has(name) {
    return this.#sessions.has(name);
  }

  /**
   * @param {string} name
   * @returns {SessionStatus}
   */
  status(name) {
    return this.#statusOf(this.#get(name));
  }

  /** @returns {SessionStatus[]} every session, by name */
  list() {
    return [...this.#sessions.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).map((s) => this.#statusOf(s));
  }

  /** Number of sessions in each state (every state present). */
  countsByState() {
    /** @type {Record<string, number>} */
    const counts = Object.fromEntries(SESSION_STATES.map((state) => [state, 0]));
    for (const session of this.#sessions.values()) counts[session.state] += 1;
    return counts;
  }

  /**
   * The QR waiting to be scanned, or null.
   * @param {string} name
   * @returns {{qr: string, expires_at: string, pairing_code?: string} | null}
   */
  qr(name) {
    const session = this.#get(name);
    if (!session.qr || session.qr.expiresAt <= this.#now()) return null;
    /** @type {{qr: string, expires_at: string, pairing_code?: string}} */
    const answer = { qr: session.qr.value, expires_at: rfc3339(session.qr.expiresAt) };
    const code = this.#pairingCode(session);
    if (code) answer.pairing_code = code;
    return answer;
  }

  /**
   * Starts a session, or does nothing when it runs already (disconnected ones included:
   * they reconnect on their own). A logged-out or failed session starts afresh.
   * @param {string} name
   * @param {{pairingPhone?: string | null}} [options]
   * @returns {Promise<SessionStatus>}
   */
  async start(name, options = {}) {
    if (this.#closed) throw new BridgeError('internal', 'the bridge is shutting down');
    if (!SESSION_NAME.test(name)) throw invalidName(name);
    let session = this.#sessions.get(name);
    if (session && !TERMINAL.has(session.state)) {
      // Waiting for a QR scan and now asked to pair by phone number (or another one):
      // the library is asked again, for a pairing code.
      const wanted = options.pairingPhone ?? null;
      if (wanted && wanted !== session.pairingPhone && UNPAIRED.has(session.state)) return this.restart(name, options);
      return this.#statusOf(session);
    }
    if (this.#activeCount() >= this.#maxSessions) {
      throw new BridgeError('session_limit', `this bridge holds its maximum of ${this.#maxSessions} running sessions (BRIDGE_MAX_SESSIONS)`);
    }
    // No await before the session is in the map: a concurrent start sees it running.
    if (!session) {
      session = this.#record(name, rfc3339(this.#now()));
    } else if (session.state === 'logged_out') {
      session.phone = null; // the next pairing may be another phone
    }
    session.pairingPhone = options.pairingPhone ?? null;
    session.attempts = 0;
    if (!this.#transition(session, 'initializing', null)) {
      this.#onEvent(name, 'state', this.#stateData(session)); // a new session: say so all the same
    }
    await this.#persist();
    await this.#launch(session);
    return this.#statusOf(session);
  }

  /**
   * Restarts a session at once: its driver is stopped without logging out (the
   * credentials stay) and a new one started without waiting for a backoff; the count of
   * reconnection attempts starts again. A logged-out or failed session is started as by
   * {@link start}.
   * @param {string} name
   * @param {{pairingPhone?: string | null}} [options]
   * @returns {Promise<SessionStatus>}
   */
  async restart(name, options = {}) {
    if (this.#closed) throw new BridgeError('internal', 'the bridge is shutting down');
    const session = this.#get(name);
    if (TERMINAL.has(session.state)) return this.start(name, options);
    this.#log.info('session restarted', { session: name, from: session.state });
    this.#letGo(session);
    session.qr = null;
    session.pairing = null;
    session.pairingPhone = options.pairingPhone ?? null;
    session.attempts = 0;
    this.#transition(session, 'initializing', null);
    await this.#launch(session);
    return this.#statusOf(session);
  }

  /**
   * Logs a session out on WhatsApp, stops it, deletes its credentials and forgets it.
   * A logout that fails (no connection) is logged; the credentials go anyway.
   * @param {string} name
   */
  async remove(name) {
    const session = this.#get(name);
    this.#sessions.delete(name);
    // Let go of the driver without stopping it yet: it logs out first.
    const driver = session.driver;
    session.driver = null;
    session.generation += 1;
    this.#clearTimers(session);
    await session.stopping;
    if (driver) {
      await bounded(() => driver.logout(), this.#timings.logoutTimeoutMs, 'logout').catch((err) =>
        this.#log.warn('logout on WhatsApp failed; the session is deleted here anyway', { session: name, error: err }),
      );
      await bounded(() => driver.stop(), this.#timings.stopTimeoutMs, 'stop').catch((err) =>
        this.#log.warn('driver did not stop cleanly', { session: name, error: err }),
      );
    }
    await rm(this.#sessionDir(name), { recursive: true, force: true });
    await this.#persist();
    this.#log.info('session deleted', { session: name });
    this.#onEvent(name, 'state', { state: 'logged_out', phone: session.phone, reason: 'deleted', since: rfc3339(this.#now()) });
  }

  /**
   * Sends a text through a ready session; resolves with the message id.
   * @param {string} name
   * @param {{to: string, text: string, replyTo: string | null}} message
   */
  async send(name, message) {
    const driver = this.#readyDriver(name);
    return messageId(await driver.send(message));
  }

  /**
   * Sends media through a ready session; resolves with the message id.
   * @param {string} name
   * @param {Parameters<Driver['sendMedia']>[0]} message
   */
  async sendMedia(name, message) {
    const driver = this.#readyDriver(name);
    return messageId(await driver.sendMedia(message));
  }

  /** Stops every driver (without logging out: the sessions resume at the next start). */
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    const stops = [];
    for (const session of this.#sessions.values()) {
      this.#letGo(session);
      stops.push(session.stopping);
    }
    await Promise.all(stops);
    await this.#writes.idle();
  }

  /**
   * @param {string} name
   * @param {string} createdAt
   */
  #record(name, createdAt) {
    /** @type {Session} */
    const session = {
      name,
      state: 'initializing',
      phone: null,
      reason: null,
      since: this.#now(),
      createdAt,
      qr: null,
      pairing: null,
      pairingPhone: null,
      driver: null,
      generation: 0,
      attempts: 0,
      reconnectTimer: null,
      startTimer: null,
      stopping: null,
    };
    this.#sessions.set(name, session);
    return session;
  }

  /** @param {string} name */
  #get(name) {
    if (!SESSION_NAME.test(name)) throw invalidName(name);
    const session = this.#sessions.get(name);
    if (!session) throw new BridgeError('session_not_found', `no session ${name} on this bridge`);
    return session;
  }

  /** @param {string} name */
  #readyDriver(name) {
    const session = this.#get(name);
    if (session.state !== 'ready' || !session.driver) {
      const why = session.reason ? ` (${session.reason})` : '';
      throw new BridgeError('session_not_ready', `session ${name} is ${session.state}${why}, not ready`);
    }
    return session.driver;
  }

  #activeCount() {
    let count = 0;
    for (const session of this.#sessions.values()) if (!TERMINAL.has(session.state)) count += 1;
    return count;
  }

  /** @param {Session} session */
  #pairingCode(session) {
    return session.pairing && session.pairing.expiresAt > this.#now() ? session.pairing.code : null;
  }

  /**
   * @param {Session} session
   * @returns {SessionStatus}
   */
  #statusOf(session) {
    /** @type {SessionStatus} */
    const status = { session: session.name, ...this.#stateData(session) };
    const code = this.#pairingCode(session);
    if (code) status.pairing_code = code;
    return status;
  }

  /** @param {Session} session */
  #stateData(session) {
    return { state: session.state, phone: session.phone, reason: session.reason, since: rfc3339(session.since) };
  }

  /**
   * Moves a session to `state`; posts a `state` event when anything in it changed.
   * @param {Session} session
   * @param {SessionStateName} state
   * @param {string | null} reason
   * @param {string | null} [phone]
   * @returns {boolean} whether anything changed
   */
  #transition(session, state, reason, phone = session.phone) {
    if (session.state === state && session.reason === reason && session.phone === phone) return false;
    const persist = session.phone !== phone || TERMINAL.has(state) !== TERMINAL.has(session.state);
    if (session.state !== state) session.since = this.#now();
    this.#log.info('session state', { session: session.name, from: session.state, state, reason });
    session.state = state;
    session.reason = reason;
    session.phone = phone;
    this.#onEvent(session.name, 'state', this.#stateData(session));
    if (persist) this.#persist().catch((err) => this.#log.error('sessions.json could not be written', { error: err }));
    return true;
  }

  /**
   * Makes a new driver for the session and starts it (not waiting for it to connect).
   * @param {Session} session
   */
  async #launch(session) {
    const generation = ++session.generation;
    this.#clearTimers(session);
    await session.stopping; // the previous driver must let go of the session's files first
    if (generation !== session.generation || this.#closed) return;
    const dataDir = this.#sessionDir(session.name);
    /** @type {Driver} */
    let driver;
    try {
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
      driver = await this.#factory({
        session: session.name,
        dataDir,
        emit: (type, data) => this.#fromDriver(session, generation, type, data ?? {}),
        library: this.#library,
        pairingPhone: session.pairingPhone,
        chromiumPath: this.#chromiumPath,
        log: prefixed(this.#log, { session: session.name }),
      });
    } catch (err) {
      if (generation === session.generation) this.#lost(session, `the driver could not be created: ${errorText(err)}`);
      return;
    }
    if (generation !== session.generation || this.#closed) {
      await bounded(() => driver.stop(), this.#timings.stopTimeoutMs, 'stop').catch(() => {});
      return;
    }
    session.driver = driver;
    session.startTimer = setTimeout(() => {
      session.startTimer = null;
      if (generation === session.generation) {
        this.#lost(session, `no QR and no login within ${Math.round(this.#timings.startTimeoutMs / 1000)} s of starting`);
      }
    }, this.#timings.startTimeoutMs);
    session.startTimer.unref();
    Promise.resolve()
      .then(() => driver.start())
      .catch((err) => {
        if (generation !== session.generation) return;
        if (err?.fatal === true) this.#terminal(session, 'failed', errorText(err));
        else this.#lost(session, `start failed: ${errorText(err)}`);
      });
  }

  /**
   * An event from a driver; ignored when that driver was let go since.
   * @param {Session} session
   * @param {number} generation
   * @param {string} type
   * @param {Record<string, any>} data
   */
  #fromDriver(session, generation, type, data) {
    if (generation !== session.generation || this.#closed) {
      this.#log.debug('event of a stopped driver ignored', { session: session.name, type });
      return;
    }
    switch (type) {
      case 'qr': {
        const qr = typeof data.qr === 'string' ? data.qr.trim() : '';
        if (!qr || qr.startsWith('data:')) {
          this.#log.warn('driver gave no raw QR string; ignored', { session: session.name });
          return;
        }
        this.#alive(session);
        const expiresAt = expiry(data, this.#now(), this.#timings.qrTtlMs);
        session.qr = { value: qr, expiresAt };
        this.#transition(session, 'qr', null);
        this.#onEvent(session.name, 'qr', { qr, expires_at: rfc3339(expiresAt) });
        return;
      }
      case 'pairing_code': {
        const code = typeof data.code === 'string' ? data.code.trim() : '';
        if (!code) return;
        this.#alive(session);
        const expiresAt = expiry(data, this.#now(), this.#timings.pairingCodeTtlMs);
        session.pairing = { code, expiresAt };
        this.#transition(session, 'qr', null);
        this.#onEvent(session.name, 'pairing_code', { code, expires_at: rfc3339(expiresAt) });
        return;
      }
      case 'authenticated':
        this.#alive(session);
        session.qr = null;
        session.pairing = null;
        this.#transition(session, 'authenticated', null);
        return;
      case 'ready':
        this.#alive(session);
        session.qr = null;
        session.pairing = null;
        session.attempts = 0;
        this.#transition(session, 'ready', null, e164(data.phone) ?? session.phone);
        return;
      case 'disconnected': {
        const reason = textOr(data.reason, 'disconnected');
        if (data.loggedOut === true) this.#terminal(session, 'logged_out', reason);
        else this.#lost(session, reason);
        return;
      }
      case 'failed':
        this.#terminal(session, 'failed', textOr(data.reason, 'failed'));
        return;
      case 'message':
      case 'ack':
      case 'lid_mapping':
        this.#onDriverData(session.name, type, data);
        return;
      default:
        this.#log.debug('unknown driver event ignored', { session: session.name, type });
    }
  }

  /** The driver showed a sign of life: no restart for silence. @param {Session} session */
  #alive(session) {
    if (session.startTimer) {
      clearTimeout(session.startTimer);
      session.startTimer = null;
    }
  }

  /**
   * The connection is gone: stop the driver, wait, start a new one. The delay doubles
   * from reconnectMinMs to reconnectMaxMs with each attempt since the last `ready`.
   * @param {Session} session
   * @param {string} reason
   */
  #lost(session, reason) {
    if (TERMINAL.has(session.state) || this.#closed) return;
    this.#letGo(session);
    session.qr = null;
    session.pairing = null;
    session.attempts += 1;
    const max = this.#reconnectMaxAttempts;
    if (max > 0 && session.attempts > max) {
      this.#terminal(session, 'failed', `gave up reconnecting after ${max} attempts: ${reason}`);
      return;
    }
    this.#transition(session, 'disconnected', reason);
    const { reconnectMinMs, reconnectMaxMs } = this.#timings;
    const delay = Math.min(reconnectMaxMs, reconnectMinMs * 2 ** Math.min(session.attempts - 1, 30));
    this.#log.info('session reconnects', { session: session.name, attempt: session.attempts, delay_ms: delay });
    const generation = session.generation;
    session.reconnectTimer = setTimeout(() => {
      session.reconnectTimer = null;
      if (generation === session.generation && !this.#closed) {
        this.#launch(session).catch((err) => this.#log.error('reconnection failed', { session: session.name, error: err }));
      }
    }, delay);
    session.reconnectTimer.unref();
  }

  /**
   * logged_out or failed: stop the driver and wait for someone to start the session
   * again. Logged out, the credentials are worthless: they are deleted.
   * @param {Session} session
   * @param {'logged_out' | 'failed'} state
   * @param {string} reason
   */
  #terminal(session, state, reason) {
    this.#letGo(session);
    session.qr = null;
    session.pairing = null;
    this.#transition(session, state, reason);
    if (state === 'logged_out') {
      const stopped = session.stopping;
      session.stopping = (async () => {
        await stopped;
        await rm(this.#sessionDir(session.name), { recursive: true, force: true });
      })().catch((err) => this.#log.error('credentials of a logged-out session could not be deleted', { session: session.name, error: err }));
    }
  }

  /**
   * Lets go of the session's driver: its later events are ignored, its timers cleared,
   * and it is stopped (session.stopping settles once it is).
   * @param {Session} session
   */
  #letGo(session) {
    session.generation += 1;
    this.#clearTimers(session);
    const driver = session.driver;
    session.driver = null;
    if (!driver) return;
    const previous = session.stopping;
    session.stopping = (async () => {
      await previous;
      await bounded(() => driver.stop(), this.#timings.stopTimeoutMs, 'stop');
    })().catch((err) => this.#log.warn('driver did not stop cleanly', { session: session.name, error: err }));
  }

  /** @param {Session} session */
  #clearTimers(session) {
    if (session.reconnectTimer) clearTimeout(session.reconnectTimer);
    if (session.startTimer) clearTimeout(session.startTimer);
    session.reconnectTimer = null;
    session.startTimer = null;
  }

  /** Writes sessions.json (the last write holds the latest list). */
  #persist() {
    return this.#writes.run(async () => {
      const sessions = [...this.#sessions.values()].map((s) => ({
        name: s.name,
        created_at: s.createdAt,
        phone: s.phone,
        // null: running, to restart at the next start; else the terminal state it stays in
        state: TERMINAL.has(s.state) ? s.state : null,
        reason: TERMINAL.has(s.state) ? s.reason : null,
      }));
      await writeFileAtomic(this.#file, `${JSON.stringify({ version: 1, sessions }, null, 1)}\n`);
    });
  }
}

/** @param {string} name */
function invalidName(name) {
  return new BridgeError('invalid_request', `session name ${JSON.stringify(name)} must be 1 to 64 letters, digits, - or _`);
}

/**
 * A driver's answer to a send: the id, or {id}.
 * @param {unknown} answer
 */
function messageId(answer) {
  const id = typeof answer === 'string' ? answer : /** @type {{id?: unknown}} */ (answer)?.id;
  if (typeof id !== 'string' || id === '') throw new BridgeError('internal', 'the driver sent the message but returned no message id');
  return id;
}

/**
 * When a QR or pairing code expires: `expires_at` (RFC 3339 or ms), else now + `ttl_ms`,
 * else now + the default.
 * @param {Record<string, any>} data
 * @param {number} now
 * @param {number} defaultTtlMs
 */
function expiry(data, now, defaultTtlMs) {
  if (data.expires_at !== undefined) {
    const at = typeof data.expires_at === 'number' ? data.expires_at : Date.parse(data.expires_at);
    if (Number.isFinite(at)) return at;
  }
  if (typeof data.ttl_ms === 'number' && data.ttl_ms > 0) return now + data.ttl_ms;
  return now + defaultTtlMs;
}

/** @param {unknown} value @param {string} fallback */
function textOr(value, fallback) {
  return typeof value === 'string' && value.trim() ? value.trim() : fallback;
}

/** @param {unknown} err */
function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs `job`, failing after `ms`.
 * @param {() => unknown} job
 * @param {number} ms
 * @param {string} what
 */
async function bounded(job, ms, what) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([Promise.resolve().then(job), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * @param {import('./log.js').Logger} log
 * @param {Record<string, unknown>} fields
 * @returns {import('./log.js').Logger}
 */
function prefixed(log, fields) {
  return {
    debug: (message, more) => log.debug(message, { ...fields, ...more }),
    info: (message, more) => log.info(message, { ...fields, ...more }),
    warn: (message, more) => log.warn(message, { ...fields, ...more }),
    error: (message, more) => log.error(message, { ...fields, ...more }),
  };
}
