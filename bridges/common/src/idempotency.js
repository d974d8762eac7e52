// Idempotency keys of /send and /send-media (docs/bridges.md): dashd repeats a key when
// it retries one outgoing message; the bridge answers a key it sent in the last 24 hours
// with the id of the first send instead of sending again. A repeat that arrives while the
// first send is still running waits for it. A send that failed is not remembered, so a
// retry sends. Keys are kept per session in `<dataDir>/idempotency.jsonl` (one fsynced
// line per send, compacted at start and hourly), so a bridge restart does not turn a
// retry into a second message.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { appendLineDurably, SerialQueue, writeFileAtomic } from './files.js';
import { silentLogger } from './log.js';

/**
 * @typedef {{id: string, at: number}} SentKey
 */

export class IdempotencyStore {
  #file;
  #ttlMs;
  #now;
  #log;
  /** @type {Map<string, SentKey>} */
  #sent = new Map();
  /** @type {Map<string, Promise<string>>} */
  #running = new Map();
  #compactedAt = 0;
  #writes = new SerialQueue();

  /**
   * @param {{dataDir: string, ttlMs?: number, now?: () => number, log?: import('./log.js').Logger}} options
   */
  constructor(options) {
    this.#file = join(options.dataDir, 'idempotency.jsonl');
    this.#ttlMs = options.ttlMs ?? 24 * 60 * 60 * 1000;
    this.#now = options.now ?? Date.now;
    this.#log = options.log ?? silentLogger;
  }

  async load() {
    let text = '';
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (err) {
      if (/** @type {NodeJS.ErrnoException} */ (err).code !== 'ENOENT') throw err;
    }
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        const { s, k, id, at } = JSON.parse(line);
        if (typeof s === 'string' && typeof k === 'string' && typeof id === 'string' && typeof at === 'number') {
          this.#sent.set(keyOf(s, k), { id, at });
        }
      } catch {
        // a line torn by a crash mid-append: its send was never answered
      }
    }
    await this.#compact();
  }

  /**
   * The id of the first send of `key`, running `send` only when there is none (or it
   * failed). Without a key, just sends.
   * @param {string} session
   * @param {string | null | undefined} key
   * @param {() => Promise<string>} send resolves with the message id
   * @returns {Promise<{id: string, repeated: boolean}>}
   */
  async run(session, key, send) {
    if (key === undefined || key === null) return { id: await send(), repeated: false };
    const k = keyOf(session, key);
    const known = this.#sent.get(k);
    if (known && this.#now() - known.at < this.#ttlMs) return { id: known.id, repeated: true };
    const running = this.#running.get(k);
    if (running) return { id: await running, repeated: true };
    const attempt = (async () => {
      const id = await send();
      this.#sent.set(k, { id, at: this.#now() });
      await this.#record(session, key, id);
      return id;
    })();
    this.#running.set(k, attempt);
    try {
      return { id: await attempt, repeated: false };
    } finally {
      this.#running.delete(k);
    }
  }

  /** Keys remembered now (expired ones included until the next compaction). */
  get size() {
    return this.#sent.size;
  }

  async flush() {
    await this.#writes.idle();
  }

  /** @param {string} session @param {string} key @param {string} id */
  async #record(session, key, id) {
    const line = JSON.stringify({ s: session, k: key, id, at: this.#now() });
    try {
      await this.#writes.run(async () => {
        await appendLineDurably(this.#file, line);
        // expired keys leave memory and the file once per 1/24 of their lifetime
        if (this.#now() - this.#compactedAt >= this.#ttlMs / 24) await this.#compact();
      });
    } catch (err) {
      // The message went out; only a retry after a restart could repeat it.
      this.#log.error('idempotency key could not be written to disk', { session, error: err });
    }
  }

  /** Forgets expired keys and rewrites the file with the live ones. */
  async #compact() {
    const now = this.#now();
    const lines = [];
    for (const [k, sent] of this.#sent) {
      if (now - sent.at >= this.#ttlMs) {
        this.#sent.delete(k);
        continue;
      }
      const [s, key] = splitKey(k);
      lines.push(JSON.stringify({ s, k: key, id: sent.id, at: sent.at }));
    }
    await writeFileAtomic(this.#file, lines.length ? `${lines.join('\n')}\n` : '');
    this.#compactedAt = now;
  }
}

/** @param {string} session @param {string} key */
function keyOf(session, key) {
  return `${session}\u0000${key}`;
}

/** @param {string} k */
function splitKey(k) {
  const at = k.indexOf('\u0000');
  return [k.slice(0, at), k.slice(at + 1)];
}
