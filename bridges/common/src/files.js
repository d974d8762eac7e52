// Durable file helpers: every state file of a bridge (sessions, LID map, idempotency
// keys, queued events) is written so that a crash or power loss leaves either the old
// or the new content, never a torn file.

import { open, rename, readFile, rm, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * fsyncs a directory so that a rename or unlink in it is durable. Some file systems
 * refuse to sync a directory; that is not worth failing a write for.
 * @param {string} dir
 */
export async function syncDir(dir) {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // best effort, see above
  } finally {
    await handle?.close().catch(() => {});
  }
}

/**
 * Writes `data` to `path` atomically: a temporary file beside it, fsynced, renamed over
 * the target, then the directory fsynced.
 * @param {string} path
 * @param {string | Uint8Array} data
 */
export async function writeFileAtomic(path, data) {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const temporary = `${path}.${process.pid}.${Math.random().toString(16).slice(2)}.tmp`;
  const handle = await open(temporary, 'w', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => {});
    await rm(temporary, { force: true });
    throw err;
  }
  await handle.close();
  await rename(temporary, path);
  await syncDir(dir);
}

/**
 * Appends one line to `path` and fsyncs it (the file is created when missing).
 * @param {string} path
 * @param {string} line without its newline
 */
export async function appendLineDurably(path, line) {
  await mkdir(dirname(path), { recursive: true });
  const handle = await open(path, 'a', 0o600);
  try {
    await handle.write(`${line}\n`);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/**
 * Reads a JSON file; `fallback` when it does not exist. A file that exists but does not
 * parse is an error: silently starting empty would forget sessions or mappings.
 * @template T
 * @param {string} path
 * @param {T} fallback
 * @returns {Promise<any>}
 */
export async function readJsonFile(path, fallback) {
  let text;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (/** @type {NodeJS.ErrnoException} */ (err).code === 'ENOENT') return fallback;
    throw err;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path} is not valid JSON (${/** @type {Error} */ (err).message}); fix or move it away`);
  }
}

/**
 * Serialises asynchronous jobs: each runs after the previous one settled. Used for
 * writes of one file, so that the last write wins.
 */
export class SerialQueue {
  /** @type {Promise<unknown>} */
  #tail = Promise.resolve();

  /**
   * @template T
   * @param {() => Promise<T>} job
   * @returns {Promise<T>}
   */
  run(job) {
    const result = this.#tail.then(job, job);
    this.#tail = result.catch(() => {});
    return result;
  }

  /** Resolves once every job queued so far has settled. */
  idle() {
    return this.#tail;
  }
}
