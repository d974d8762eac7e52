// Media of received messages, kept by the bridge for dashd to fetch (docs/bridges.md,
// "message": `media.url` is a URL dashd can fetch with the bearer token). A driver hands
// the downloaded bytes over in its `message` event (`media.data`); the bridge stores them
// under `<dataDir>/media/<session>/<id>` (with `<id>.json` describing them), serves them
// at `GET /media/<session>/<id>` and deletes them after a retention time.
//
// Also: {@link downloadMedia}, for drivers whose library cannot send from a URL itself.

import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './files.js';
import { httpRequest } from './http-client.js';
import { silentLogger } from './log.js';

const MEDIA_ID = /^[0-9a-f]{32}$/;

/**
 * @typedef {object} StoredMedia
 * @property {string} file path of the bytes
 * @property {string} mimeType
 * @property {string | null} filename
 * @property {number} size bytes
 */

export class MediaStore {
  #dir;
  #ttlMs;
  #log;
  #now;
  /** @type {string | null} */
  #baseUrl = null;

  /**
   * @param {{dataDir: string, ttlMs?: number, log?: import('./log.js').Logger, now?: () => number}} options
   */
  constructor(options) {
    this.#dir = join(options.dataDir, 'media');
    this.#ttlMs = options.ttlMs ?? 7 * 24 * 60 * 60 * 1000;
    this.#log = options.log ?? silentLogger;
    this.#now = options.now ?? Date.now;
  }

  /** @param {string} url the bridge's root URL as dashd reaches it */
  setBaseUrl(url) {
    this.#baseUrl = url.replace(/\/+$/, '');
  }

  /**
   * Stores media bytes; returns the id and the URL dashd fetches them from.
   * @param {string} session
   * @param {{data: Buffer | Uint8Array | string, mimeType?: string | null, filename?: string | null}} media
   *   `data` as bytes, or base64 text (whatsapp-web.js' MessageMedia.data)
   */
  async save(session, media) {
    const data = typeof media.data === 'string' ? Buffer.from(media.data, 'base64') : Buffer.from(media.data);
    const id = randomBytes(16).toString('hex');
    const dir = join(this.#dir, session);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(join(dir, id), data);
    const meta = {
      mime_type: media.mimeType || 'application/octet-stream',
      filename: media.filename || null,
      size: data.length,
      stored_at: new Date(this.#now()).toISOString(),
    };
    await writeFileAtomic(join(dir, `${id}.json`), JSON.stringify(meta));
    const url = `${this.#baseUrl ?? ''}/media/${encodeURIComponent(session)}/${id}`;
    return { id, url };
  }

  /**
   * The stored media `id` of `session`, or null.
   * @param {string} session
   * @param {string} id
   * @returns {Promise<StoredMedia | null>}
   */
  async open(session, id) {
    if (!MEDIA_ID.test(id)) return null;
    const file = join(this.#dir, session, id);
    try {
      const meta = JSON.parse(await readFile(`${file}.json`, 'utf8'));
      const { size } = await stat(file);
      return { file, mimeType: meta.mime_type || 'application/octet-stream', filename: meta.filename ?? null, size };
    } catch {
      return null;
    }
  }

  /** @param {string} session */
  async removeSession(session) {
    await rm(join(this.#dir, session), { recursive: true, force: true });
  }

  /** Deletes media stored longer ago than the retention time. */
  async sweep() {
    let sessions;
    try {
      sessions = await readdir(this.#dir, { withFileTypes: true });
    } catch {
      return;
    }
    const cutoff = this.#now() - this.#ttlMs;
    let removed = 0;
    for (const entry of sessions) {
      if (!entry.isDirectory()) continue;
      const dir = join(this.#dir, entry.name);
      for (const name of await readdir(dir).catch(() => [])) {
        const file = join(dir, name);
        const info = await stat(file).catch(() => null);
        if (info && info.mtimeMs < cutoff) {
          await rm(file, { force: true });
          removed += 1;
        }
      }
    }
    if (removed > 0) this.#log.info('expired media removed', { files: removed });
  }
}

/**
 * Downloads `url` (following up to 5 redirects): the bytes, their MIME type (without
 * parameters) and a file name when the answer or the URL names one.
 * @param {string} url an http:// or https:// URL
 * @param {{maxBytes?: number, timeoutMs?: number}} [options] default 64 MiB, 60 s
 * @returns {Promise<{data: Buffer, mimeType: string | null, filename: string | null}>}
 */
export async function downloadMedia(url, options = {}) {
  const signal = AbortSignal.timeout(options.timeoutMs ?? 60000);
  let target = new URL(url);
  for (let redirects = 0; ; redirects += 1) {
    const answer = await httpRequest(target, { signal, maxBytes: options.maxBytes ?? 64 * 1024 * 1024 });
    const location = answer.headers.location;
    if (answer.status >= 300 && answer.status < 400 && location) {
      if (redirects >= 5) throw new Error(`${url} redirects too often`);
      target = new URL(location, target);
      continue;
    }
    if (answer.status < 200 || answer.status >= 300) throw new Error(`downloading ${target.origin}${target.pathname} answered HTTP ${answer.status}`);
    const type = answer.headers['content-type']?.split(';')[0].trim().toLowerCase() || null;
    return { data: answer.body, mimeType: type, filename: filenameOf(answer.headers['content-disposition'], target) };
  }
}

/**
 * @param {string | undefined} disposition
 * @param {URL} url
 */
function filenameOf(disposition, url) {
  const named = disposition && /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  if (named) {
    try {
      return decodeURIComponent(named[1]);
    } catch {
      return named[1];
    }
  }
  const last = url.pathname.split('/').pop();
  if (last && last.includes('.')) {
    try {
      return decodeURIComponent(last);
    } catch {
      return last;
    }
  }
  return null;
}
