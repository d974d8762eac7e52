// The persistent LID ↔ phone map of a bridge (`<dataDir>/lid-map.json`).
//
// WhatsApp addresses more and more people by LID (`<digits>@lid`), a privacy id that is
// not a phone number. The libraries reveal which LID belongs to which phone now and then
// (Baileys' LID mapping events, `remoteJidAlt`, a contact's number); the bridge keeps
// every such pair, across restarts, and adds the other identifier to message events, so
// dashd can merge the two into one contact and one customer never becomes two
// conversations. The map is shared by every session of the bridge: a LID names one
// WhatsApp user whichever account sees it.

import { join } from 'node:path';
import { lidJid, phoneDigits } from './address.js';
import { readJsonFile, SerialQueue, writeFileAtomic } from './files.js';
import { silentLogger } from './log.js';

export class LidMap {
  #file;
  #log;
  #flushDelayMs;
  /** @type {Map<string, string>} LID JID → phone digits */
  #phoneByLid = new Map();
  /** @type {Map<string, string>} phone digits → LID JID */
  #lidByPhone = new Map();
  #writes = new SerialQueue();
  /** @type {NodeJS.Timeout | null} */
  #timer = null;
  #dirty = false;

  /**
   * @param {{dataDir: string, log?: import('./log.js').Logger, flushDelayMs?: number}} options
   */
  constructor(options) {
    this.#file = join(options.dataDir, 'lid-map.json');
    this.#log = options.log ?? silentLogger;
    this.#flushDelayMs = options.flushDelayMs ?? 200;
  }

  async load() {
    const stored = await readJsonFile(this.#file, { version: 1, lid_to_phone: {} });
    for (const [lid, phone] of Object.entries(stored.lid_to_phone ?? {})) this.#set(lid, phone);
  }

  /** Number of known pairs. */
  get size() {
    return this.#phoneByLid.size;
  }

  /**
   * Records that `lid` and `phone` are the same user (a number change replaces the old
   * pair). Returns whether the map changed; a changed map is written shortly after.
   * @param {unknown} lid a LID JID (`12345678901234@lid`, device suffix allowed)
   * @param {unknown} phone digits, `+digits` or a phone JID
   */
  learn(lid, phone) {
    const changed = this.#set(lid, phone);
    if (changed) this.#scheduleFlush();
    return changed;
  }

  /**
   * The phone (`+digits`) of a LID, if known.
   * @param {unknown} lid
   */
  phoneOf(lid) {
    const key = lidJid(lid);
    const digits = key ? this.#phoneByLid.get(key) : undefined;
    return digits ? `+${digits}` : null;
  }

  /**
   * The LID JID of a phone, if known.
   * @param {unknown} phone
   */
  lidOf(phone) {
    const digits = phoneDigits(phone);
    return (digits && this.#lidByPhone.get(digits)) ?? null;
  }

  /** Writes pending changes now. */
  async flush() {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#dirty) {
      this.#dirty = false;
      await this.#writes.run(() => this.#write());
    }
    await this.#writes.idle();
  }

  /** @param {unknown} lid @param {unknown} phone */
  #set(lid, phone) {
    const key = lidJid(lid);
    const digits = phoneDigits(phone);
    if (!key || !digits) return false;
    if (this.#phoneByLid.get(key) === digits && this.#lidByPhone.get(digits) === key) return false;
    const oldPhone = this.#phoneByLid.get(key);
    if (oldPhone !== undefined && this.#lidByPhone.get(oldPhone) === key) this.#lidByPhone.delete(oldPhone);
    const oldLid = this.#lidByPhone.get(digits);
    if (oldLid !== undefined && this.#phoneByLid.get(oldLid) === digits) this.#phoneByLid.delete(oldLid);
    this.#phoneByLid.set(key, digits);
    this.#lidByPhone.set(digits, key);
    return true;
  }

  #scheduleFlush() {
    this.#dirty = true;
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.flush().catch((err) => this.#log.error('LID map could not be written', { error: err }));
    }, this.#flushDelayMs);
    this.#timer.unref();
  }

  async #write() {
    const snapshot = Object.fromEntries([...this.#phoneByLid].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    await writeFileAtomic(this.#file, `${JSON.stringify({ version: 1, lid_to_phone: snapshot }, null, 1)}\n`);
  }
}
