// The outbound event queue (docs/bridges.md, "Events", "Signing", "Delivery").
//
// Every event is written to disk (one file per event, fsynced, under
// `<dataDir>/events/<session>/<seq>.json`, holding the exact body to post) before any
// attempt to deliver it, and removed only once dashd acknowledged it with a 2xx. Each
// session has its own ordered queue and worker: one session's stuck event never holds
// another session's events back, and within a session events arrive in the order they
// happened. Each attempt is signed afresh (X-Dashd-Timestamp, X-Dashd-Signature);
// failures are retried with exponential backoff (1 s doubling to 5 min). A permanent
// refusal (400 malformed, 413 too large, 404 `unknown_session`: no bot owns the
// session) would be refused again however often it is retried: the event is moved to
// `<dataDir>/events/<session>/dead/<seq>.json` (a dead letter, kept for the operator
// and swept after 7 days), logged, and the queue moves on. A bridge restart resumes
// from the files, so neither a dashd outage nor a bridge restart loses an event (a
// retry after a lost acknowledgement can repeat one; dashd de-duplicates).

import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { mkdir, readdir, readFile, rename, rm, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDir, writeFileAtomic } from './files.js';
import { httpRequest } from './http-client.js';
import { silentLogger } from './log.js';

const SESSION_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const EVENT_FILE = /^(\d{16})\.json$/;
/** The folder of a session's dead letters, beside its queued events. */
const DEAD = 'dead';

/**
 * `sha256=<lowercase hex of HMAC-SHA256(token, "<timestamp>.<raw body>")>`.
 * @param {string} token
 * @param {string} timestamp the X-Dashd-Timestamp header's exact text
 * @param {string | Buffer} body the raw body as sent
 */
export function signEvent(token, timestamp, body) {
  const mac = createHmac('sha256', token);
  mac.update(`${timestamp}.`);
  mac.update(body);
  return `sha256=${mac.digest('hex')}`;
}

/**
 * @typedef {object} EventTimings
 * @property {number} [retryMinMs] first retry delay (1 s)
 * @property {number} [retryMaxMs] longest retry delay (5 min)
 * @property {number} [requestTimeoutMs] one attempt's time bound (10 s)
 * @property {number} [closeGraceMs] how long close() lets attempts under way finish (2 s)
 * @property {number} [deadTtlMs] how long dead letters are kept (7 days)
 */

/**
 * @typedef {object} QueuedEvent
 * @property {number} seq
 * @property {string | null} file null when it could not be written (delivered from memory)
 * @property {Buffer | null} body kept in memory until it is on disk
 * @property {string | undefined} event
 * @property {Promise<void>} written settles once the file is written (or failed to be)
 */

/**
 * @typedef {object} SessionQueue
 * @property {QueuedEvent[]} items
 * @property {boolean} running
 * @property {number} failures consecutive failed attempts of the head event
 */

export class EventQueue {
  #dir;
  #url;
  #token;
  #log;
  #now;
  #retryMinMs;
  #retryMaxMs;
  #requestTimeoutMs;
  #deadTtlMs;
  /** dead letters on disk, in all sessions */
  #dead = 0;
  /** @type {Map<string, SessionQueue>} */
  #queues = new Map();
  #seq = 0;
  #started = false;
  #closed = false;
  /** aborted at close: wakes workers waiting to retry */
  #stopping = new AbortController();
  /** aborted once the close grace is over: abandons attempts under way */
  #abandon = new AbortController();
  #closeGraceMs;
  /** @type {Set<Promise<void>>} */
  #writes = new Set();
  /** @type {Set<Promise<void>>} */
  #workers = new Set();
  #agents = {
    http: new http.Agent({ keepAlive: true, maxSockets: 16 }),
    https: new https.Agent({ keepAlive: true, maxSockets: 16 }),
  };

  /**
   * @param {{
   *   dataDir: string,
   *   dashdUrl: string,
   *   library: string,
   *   token: string,
   *   log?: import('./log.js').Logger,
   *   timings?: EventTimings,
   *   now?: () => number,
   * }} options
   */
  constructor(options) {
    this.#dir = join(options.dataDir, 'events');
    this.#url = `${options.dashdUrl.replace(/\/+$/, '')}/webhook/bridge/${encodeURIComponent(options.library)}`;
    this.#token = options.token;
    this.#log = options.log ?? silentLogger;
    this.#now = options.now ?? Date.now;
    this.#retryMinMs = options.timings?.retryMinMs ?? 1000;
    this.#retryMaxMs = options.timings?.retryMaxMs ?? 5 * 60 * 1000;
    this.#requestTimeoutMs = options.timings?.requestTimeoutMs ?? 10000;
    this.#closeGraceMs = options.timings?.closeGraceMs ?? 2000;
    this.#deadTtlMs = options.timings?.deadTtlMs ?? 7 * 24 * 60 * 60 * 1000;
  }

  /** Where events are posted. */
  get url() {
    return this.#url;
  }

  /** Loads the events left on disk by a previous run (delivered once {@link start} is called). */
  async open() {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    let restored = 0;
    for (const entry of await readdir(this.#dir, { withFileTypes: true })) {
      if (!entry.isDirectory() || !SESSION_NAME.test(entry.name)) continue;
      const dir = join(this.#dir, entry.name);
      /** @type {QueuedEvent[]} */
      const items = [];
      for (const name of await readdir(dir)) {
        const match = EVENT_FILE.exec(name);
        if (!match) {
          // a temporary file of a write that never finished: its event was never queued
          if (name.endsWith('.tmp')) await rm(join(dir, name), { force: true });
          continue;
        }
        const seq = Number(match[1]);
        this.#seq = Math.max(this.#seq, seq);
        items.push({ seq, file: join(dir, name), body: null, event: undefined, written: Promise.resolve() });
      }
      for (const name of await readdir(join(dir, DEAD)).catch(() => [])) {
        const match = EVENT_FILE.exec(name);
        if (!match) continue;
        this.#seq = Math.max(this.#seq, Number(match[1])); // a new event never takes a dead letter's name
        this.#dead += 1;
      }
      if (items.length === 0) continue;
      items.sort((a, b) => a.seq - b.seq);
      this.#queue(entry.name).items.push(...items);
      restored += items.length;
    }
    if (restored > 0) this.#log.info('undelivered events restored from disk', { events: restored });
    if (this.#dead > 0) this.#log.warn('dead letters on disk (events dashd refused for good)', { events: this.#dead, dir: this.#dir });
  }

  /** Starts delivering (the queues restored by {@link open} first). */
  start() {
    this.#started = true;
    for (const session of this.#queues.keys()) this.#kick(session);
  }

  /**
   * Queues one event: it is on disk when the returned promise resolves, and delivered
   * after every event queued before it for the same session.
   * @param {string} session
   * @param {string} event `message`, `ack`, `state`, `qr`...
   * @param {unknown} data
   * @returns {Promise<void>}
   */
  enqueue(session, event, data) {
    if (!SESSION_NAME.test(session)) throw new Error(`invalid session name ${JSON.stringify(session)}`);
    const body = Buffer.from(JSON.stringify({ event, session, data }));
    const seq = ++this.#seq;
    /** @type {QueuedEvent} */
    const item = { seq, file: join(this.#dir, session, `${String(seq).padStart(16, '0')}.json`), body, event, written: Promise.resolve() };
    const written = writeFileAtomic(/** @type {string} */ (item.file), body).then(
      () => {
        item.body = null; // on disk now: read back when sent, so a long backlog costs no memory
      },
      (err) => {
        // Not durable, but still delivered from memory while this process lives.
        this.#log.error('event could not be written to disk', { session, event, seq, error: err });
        item.file = null;
      },
    );
    item.written = written;
    this.#writes.add(written);
    written.finally(() => this.#writes.delete(written));
    this.#queue(session).items.push(item);
    this.#kick(session);
    return written;
  }

  /** Events not yet acknowledged, in all sessions. */
  pending() {
    let count = 0;
    for (const queue of this.#queues.values()) count += queue.items.length;
    return count;
  }

  /** Events not yet acknowledged, per session (sessions with none left out). */
  pendingBySession() {
    /** @type {Record<string, number>} */
    const counts = {};
    for (const [session, queue] of this.#queues) if (queue.items.length) counts[session] = queue.items.length;
    return counts;
  }

  /** Dead letters on disk: events dashd refused for good, kept for the operator. */
  dead() {
    return this.#dead;
  }

  /** Deletes dead letters older than their retention time (7 days). */
  async sweepDead() {
    const cutoff = this.#now() - this.#deadTtlMs;
    let removed = 0;
    for (const entry of await readdir(this.#dir, { withFileTypes: true }).catch(() => [])) {
      if (!entry.isDirectory() || !SESSION_NAME.test(entry.name)) continue;
      const dir = join(this.#dir, entry.name, DEAD);
      for (const name of await readdir(dir).catch(() => [])) {
        if (!EVENT_FILE.test(name)) continue;
        const file = join(dir, name);
        const info = await stat(file).catch(() => null);
        if (!info || info.mtimeMs >= cutoff) continue;
        await rm(file, { force: true });
        this.#dead = Math.max(0, this.#dead - 1);
        removed += 1;
      }
    }
    if (removed > 0) this.#log.info('expired dead letters removed', { events: removed });
  }

  /**
   * Stops delivering: no new attempt starts; one under way may finish within the close
   * grace (so an acknowledged event is not posted again by the next run), then it is
   * abandoned (its event stays on disk and is posted again by the next run). Every
   * queued event is on disk when this resolves.
   */
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopping.abort();
    await Promise.allSettled([...this.#writes]);
    /** @type {NodeJS.Timeout | undefined} */
    let timer;
    const grace = new Promise((resolve) => {
      timer = setTimeout(resolve, this.#closeGraceMs);
    });
    await Promise.race([Promise.allSettled([...this.#workers]), grace]);
    clearTimeout(timer);
    this.#abandon.abort();
    await Promise.allSettled([...this.#workers]);
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }

  /** @param {string} session */
  #queue(session) {
    let queue = this.#queues.get(session);
    if (!queue) {
      queue = { items: [], running: false, failures: 0 };
      this.#queues.set(session, queue);
    }
    return queue;
  }

  /** @param {string} session */
  #kick(session) {
    const queue = this.#queue(session);
    if (!this.#started || this.#closed || queue.running || queue.items.length === 0) return;
    queue.running = true;
    const worker = this.#work(session, queue).finally(() => {
      queue.running = false;
      this.#workers.delete(worker);
    });
    this.#workers.add(worker);
  }

  /**
   * Delivers a session's events, head first, until its queue is empty or the queue closes.
   * @param {string} session
   * @param {SessionQueue} queue
   */
  async #work(session, queue) {
    while (!this.#closed && queue.items.length > 0) {
      const item = queue.items[0];
      await item.written;
      const outcome = await this.#attempt(session, item, queue.failures);
      if (outcome === 'retry') {
        if (this.#closed) return;
        queue.failures += 1;
        await this.#sleep(this.#retryDelay(queue.failures));
        continue;
      }
      queue.failures = 0;
      queue.items.shift();
      if (outcome === 'dead') {
        await this.#bury(session, item);
        continue;
      }
      if (item.file) {
        await unlink(item.file).catch((err) => {
          if (err.code !== 'ENOENT') this.#log.error('delivered event could not be removed from disk', { session, seq: item.seq, error: err });
        });
      }
    }
  }

  /** @param {number} failures consecutive failures so far (at least 1) */
  #retryDelay(failures) {
    return Math.min(this.#retryMaxMs, this.#retryMinMs * 2 ** Math.min(failures - 1, 30));
  }

  /**
   * Moves a refused event to the session's dead letters (`dead/<seq>.json`), its time
   * set to now so that it is kept its whole retention time however long it waited.
   * @param {string} session
   * @param {QueuedEvent} item
   */
  async #bury(session, item) {
    const dir = join(this.#dir, session, DEAD);
    const target = join(dir, `${String(item.seq).padStart(16, '0')}.json`);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      if (item.file) {
        await rename(item.file, target);
        await syncDir(join(this.#dir, session));
      } else if (item.body) {
        await writeFileAtomic(target, item.body);
      } else {
        return;
      }
      const now = new Date(this.#now());
      await utimes(target, now, now);
      this.#dead += 1;
    } catch (err) {
      this.#log.error('refused event could not be kept as a dead letter; dropped', { session, seq: item.seq, error: err });
      if (item.file) await rm(item.file, { force: true }).catch(() => {});
    }
  }

  /**
   * One signed POST of the event: `delivered`, `dead` (refused for good: 400, 413, 404
   * `unknown_session`), `dropped` (unreadable here) or `retry` (anything else).
   * @param {string} session
   * @param {QueuedEvent} item
   * @param {number} failures
   * @returns {Promise<'delivered' | 'dead' | 'dropped' | 'retry'>}
   */
  async #attempt(session, item, failures) {
    if (this.#closed) return 'retry';
    let body;
    try {
      body = item.body ?? (await readFile(/** @type {string} */ (item.file)));
    } catch (err) {
      this.#log.error('queued event cannot be read back from disk; dropped', { session, seq: item.seq, error: err });
      return 'dropped';
    }
    if (item.event === undefined) item.event = eventName(body);
    const timestamp = String(Math.floor(this.#now() / 1000));
    const headers = {
      'content-type': 'application/json',
      'x-dashd-timestamp': timestamp,
      'x-dashd-signature': signEvent(this.#token, timestamp, body),
    };
    const fields = { session, event: item.event, seq: item.seq, attempt: failures + 1 };
    const quietly = failures > 0 && failures % 10 !== 0; // the first failure and every tenth are warnings
    try {
      const signal = AbortSignal.any([this.#abandon.signal, AbortSignal.timeout(this.#requestTimeoutMs)]);
      const answer = await httpRequest(this.#url, { method: 'POST', headers, body, signal, agents: this.#agents, maxBytes: 64 * 1024 });
      if (answer.status >= 200 && answer.status < 300) {
        this.#log.debug('event delivered', fields);
        return 'delivered';
      }
      const refusal = refusalOf(answer.status, answer.body);
      if (refusal.permanent) {
        this.#log.warn(`dashd refused the event for good (${refusal.why}); kept as a dead letter`, {
          ...fields,
          status: answer.status,
          code: refusal.code,
          answer: refusal.message,
        });
        return 'dead';
      }
      this.#log[quietly ? 'debug' : 'warn']('dashd did not acknowledge the event; will retry', {
        ...fields,
        status: answer.status,
        code: refusal.code,
        answer: refusal.message,
      });
      return 'retry';
    } catch (err) {
      if (!this.#closed) this.#log[quietly ? 'debug' : 'warn']('event could not be posted to dashd; will retry', { ...fields, error: err });
      return 'retry';
    }
  }

  /** @param {number} ms */
  #sleep(ms) {
    return new Promise((resolve) => {
      const signal = this.#stopping.signal;
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve(undefined);
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }
}

/** @param {Buffer} body */
function eventName(body) {
  try {
    const event = JSON.parse(body.toString('utf8'))?.event;
    return typeof event === 'string' ? event : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What dashd's non-2xx answer means: a permanent refusal (400 malformed, 413 over its
 * body limit, 404 with `error.code` `unknown_session`: no bot owns the session) or one
 * worth retrying (401, any other 404, 408, 429, 5xx...); with dashd's code and message.
 * @param {number} status
 * @param {Buffer} body
 * @returns {{permanent: boolean, why: string, code: string | null, message: string}}
 */
export function refusalOf(status, body) {
  const text = body.toString('utf8');
  /** @type {string | null} */
  let code = null;
  let message = text.slice(0, 300);
  try {
    const error = JSON.parse(text)?.error;
    if (typeof error?.code === 'string') code = error.code;
    if (typeof error?.message === 'string') message = error.message.slice(0, 300);
  } catch {
    // not JSON: the raw text is the message
  }
  if (status === 400) return { permanent: true, why: 'malformed, 400', code, message };
  if (status === 413) return { permanent: true, why: 'over its body limit, 413', code, message };
  if (status === 404 && code === 'unknown_session') return { permanent: true, why: 'no bot owns the session, 404', code, message };
  return { permanent: false, why: `HTTP ${status}`, code, message };
}
