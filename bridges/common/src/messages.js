// What drivers report about messages, made into the contract's `message` and `ack`
// events (docs/bridges.md), plus the echo filter: a bridge does not post the messages it
// sent itself through /send and /send-media, which libraries report back as `from_me`
// messages.

import { e164, isGroupLike, lidJid } from './address.js';

const MEDIA_KINDS = new Set(['image', 'video', 'audio', 'document']);

/** Library message types of each media kind (the contract: stickers are images, voice notes audio). */
const KIND_OF_TYPE = new Map([
  ['image', 'image'],
  ['sticker', 'image'],
  ['video', 'video'],
  ['gif', 'video'],
  ['ptv', 'video'],
  ['audio', 'audio'],
  ['ptt', 'audio'],
  ['voice', 'audio'],
  ['document', 'document'],
  ['documentwithcaption', 'document'],
]);

/**
 * The contract's media kind of a library message type (`image`, `sticker`, `ptt`,
 * `imageMessage`...), or null for a type that is not media.
 * @param {unknown} type
 */
export function mediaKindOfType(type) {
  return typeof type === 'string' ? (KIND_OF_TYPE.get(type.toLowerCase().replace(/message$/, '')) ?? null) : null;
}

/** whatsapp-web.js ack numbers as the contract's names. */
const ACK_NAMES = new Map([
  [-1, 'failed'],
  [0, 'pending'],
  [1, 'sent'],
  [2, 'delivered'],
  [3, 'read'],
  [4, 'played'],
]);
const ACK_ALIASES = new Map([
  ['error', 'failed'],
  ['server', 'sent'],
  ['server_ack', 'sent'],
  ['device', 'delivered'],
  ['delivery_ack', 'delivered'],
]);

/**
 * @typedef {object} MessageMedia
 * @property {string | null} kind
 * @property {string | null} mime_type
 * @property {string | null} url
 * @property {string | null} caption
 * @property {string | null} filename
 */

/**
 * @typedef {object} MessageData the `data` of a `message` event
 * @property {string} message_id
 * @property {string} chat_id
 * @property {string} sender_id
 * @property {string | null} phone
 * @property {string | null} lid
 * @property {boolean} from_me
 * @property {number} timestamp_s
 * @property {string} type
 * @property {string} text
 * @property {boolean} has_media
 * @property {MessageMedia | null} media
 * @property {string | null} reply_id
 * @property {{latitude: number, longitude: number, name: string | null, address: string | null} | null} location
 * @property {string | null} push_name
 * @property {boolean} is_group
 */

/**
 * A driver's message as the contract's `message` data, with the media bytes (if the
 * driver downloaded them) apart; or why it is not posted (a group, broadcast, status or
 * newsletter message, or one without the ids dashd needs).
 * @param {Record<string, any>} raw
 * @param {number} nowMs
 * @returns {{data: MessageData, mediaBytes: {data: Buffer | Uint8Array | string, mimeType: string | null, filename: string | null} | null} | {skip: string}}
 */
export function normaliseMessage(raw, nowMs) {
  const messageId = text(raw.message_id);
  const chatId = text(raw.chat_id);
  if (!messageId || !chatId) return { skip: 'a message without message_id or chat_id' };
  if (raw.is_group === true || isGroupLike(chatId)) return { skip: 'a group, broadcast, status or newsletter message' };
  const type = text(raw.type) ?? 'unknown';
  const media = raw.media && typeof raw.media === 'object' ? raw.media : null;
  /** @type {MessageMedia | null} */
  let normalisedMedia = null;
  let mediaBytes = null;
  if (media) {
    const declared = text(media.kind)?.toLowerCase();
    const kind = declared && MEDIA_KINDS.has(declared) ? declared : mediaKindOfType(type);
    normalisedMedia = {
      kind,
      mime_type: text(media.mime_type),
      url: text(media.url),
      caption: text(media.caption),
      filename: text(media.filename),
    };
    if (media.data !== undefined && media.data !== null) {
      mediaBytes = { data: media.data, mimeType: normalisedMedia.mime_type, filename: normalisedMedia.filename };
    }
  }
  return {
    data: {
      message_id: messageId,
      chat_id: chatId,
      sender_id: text(raw.sender_id) ?? chatId,
      phone: e164(raw.phone),
      lid: lidJid(raw.lid),
      from_me: raw.from_me === true,
      timestamp_s: seconds(raw.timestamp_s) ?? Math.floor(nowMs / 1000),
      type,
      text: typeof raw.text === 'string' ? raw.text : '',
      has_media: raw.has_media === true || normalisedMedia !== null,
      media: normalisedMedia,
      reply_id: text(raw.reply_id),
      location: location(raw.location),
      push_name: text(raw.push_name),
      is_group: false,
    },
    mediaBytes,
  };
}

/**
 * A driver's acknowledgement as the contract's `ack` data (`ack` always a name); or why
 * it is not posted (`pending`, which dashd ignores, or an unknown value).
 * @param {Record<string, any>} raw `{id | message_id, ack, chat_id?, timestamp_s?, error?}`
 * @param {number} nowMs
 * @returns {{data: {message_id: string, chat_id: string | null, ack: string, timestamp_s: number, error?: {code: string, message: string}}} | {skip: string}}
 */
export function normaliseAck(raw, nowMs) {
  const messageId = text(raw.message_id) ?? text(raw.id);
  if (!messageId) return { skip: 'an ack without a message id' };
  let ack = null;
  if (typeof raw.ack === 'number') ack = ACK_NAMES.get(raw.ack) ?? null;
  else if (typeof raw.ack === 'string') {
    const name = raw.ack.trim().toLowerCase();
    ack = ACK_ALIASES.get(name) ?? ([...ACK_NAMES.values()].includes(name) ? name : null);
  }
  if (!ack) return { skip: `an unknown ack ${JSON.stringify(raw.ack)}` };
  if (ack === 'pending') return { skip: 'a pending ack (dashd ignores them)' };
  /** @type {{message_id: string, chat_id: string | null, ack: string, timestamp_s: number, error?: {code: string, message: string}}} */
  const data = {
    message_id: messageId,
    chat_id: text(raw.chat_id),
    ack,
    timestamp_s: seconds(raw.timestamp_s) ?? Math.floor(nowMs / 1000),
  };
  if (ack === 'failed' && raw.error && typeof raw.error === 'object') {
    data.error = { code: String(raw.error.code ?? 'failed'), message: String(raw.error.message ?? '') };
  }
  return { data };
}

/**
 * Keeps the bridge's own sends from being posted back as `from_me` messages.
 *
 * A send's id is known only when the driver's send resolves, and a library may report
 * the echo before that: while a session has sends under way, its `from_me` messages are
 * held (at most `holdMs`) until those sends resolve, then dropped if they are one of them
 * and posted otherwise. Messages from the phone itself thus arrive a little later than
 * the events around them, never lost.
 */
export class EchoFilter {
  #holdMs;
  #rememberMs;
  #now;
  /** @type {Map<string, number>} */
  #sending = new Map();
  /** @type {Map<string, Map<string, number>>} session → id → when sent */
  #sent = new Map();
  /** @type {Map<string, {data: MessageData, post: (data: MessageData) => void, timer: NodeJS.Timeout}[]>} */
  #held = new Map();

  /**
   * @param {{holdMs?: number, rememberMs?: number, now?: () => number}} [options]
   */
  constructor(options = {}) {
    this.#holdMs = options.holdMs ?? 30000;
    this.#rememberMs = options.rememberMs ?? 10 * 60 * 1000;
    this.#now = options.now ?? Date.now;
  }

  /** A send through `session` begins. @param {string} session */
  begin(session) {
    this.#sending.set(session, (this.#sending.get(session) ?? 0) + 1);
  }

  /**
   * A send through `session` ended, with the id of the message sent (null if it failed).
   * @param {string} session
   * @param {string | null} id
   */
  end(session, id) {
    const count = (this.#sending.get(session) ?? 1) - 1;
    if (count > 0) this.#sending.set(session, count);
    else this.#sending.delete(session);
    if (id) this.#remember(session, id);
    this.#settle(session);
  }

  /**
   * A `from_me` message: `post` is called with it now, later, or never (an echo).
   * @param {string} session
   * @param {MessageData} data
   * @param {(data: MessageData) => void} post
   * @returns {'posted' | 'held' | 'echo'}
   */
  offer(session, data, post) {
    if (this.#isOwn(session, data.message_id)) return 'echo';
    if (!this.#sending.get(session)) {
      post(data);
      return 'posted';
    }
    const entry = {
      data,
      post,
      timer: setTimeout(() => this.#release(session, entry), this.#holdMs),
    };
    entry.timer.unref();
    const held = this.#held.get(session) ?? [];
    held.push(entry);
    this.#held.set(session, held);
    return 'held';
  }

  /** Posts every held message that is not an echo (at shutdown). */
  flush() {
    for (const [session, held] of [...this.#held]) for (const entry of [...held]) this.#release(session, entry);
  }

  /** @param {string} session @param {string} id */
  #isOwn(session, id) {
    return this.#sent.get(session)?.has(id) ?? false;
  }

  /** @param {string} session @param {string} id */
  #remember(session, id) {
    const now = this.#now();
    const ids = this.#sent.get(session) ?? new Map();
    ids.set(id, now);
    for (const [old, at] of ids) {
      if (now - at < this.#rememberMs) break; // insertion order is time order
      ids.delete(old);
    }
    this.#sent.set(session, ids);
  }

  /** @param {string} session */
  #settle(session) {
    const held = this.#held.get(session);
    if (!held) return;
    const idle = !this.#sending.get(session);
    for (const entry of [...held]) {
      if (this.#isOwn(session, entry.data.message_id)) this.#drop(session, entry);
      else if (idle) this.#release(session, entry);
    }
  }

  /**
   * @param {string} session
   * @param {{data: MessageData, post: (data: MessageData) => void, timer: NodeJS.Timeout}} entry
   */
  #release(session, entry) {
    if (!this.#drop(session, entry)) return;
    if (!this.#isOwn(session, entry.data.message_id)) entry.post(entry.data);
  }

  /**
   * @param {string} session
   * @param {{timer: NodeJS.Timeout}} entry
   * @returns {boolean} whether it was still held
   */
  #drop(session, entry) {
    clearTimeout(entry.timer);
    const held = this.#held.get(session);
    const index = held ? held.indexOf(/** @type {any} */ (entry)) : -1;
    if (!held || index < 0) return false;
    held.splice(index, 1);
    if (held.length === 0) this.#held.delete(session);
    return true;
  }
}

/** @param {unknown} value */
function text(value) {
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return typeof value === 'string' && value.trim() ? value.trim() : null;
}

/** Unix seconds from a number or a numeric string. @param {unknown} value */
function seconds(value) {
  const number = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
  return typeof number === 'number' && Number.isFinite(number) && number > 0 ? Math.floor(number) : null;
}

/** @param {any} value */
function location(value) {
  if (!value || typeof value !== 'object') return null;
  const latitude = coordinate(value.latitude);
  const longitude = coordinate(value.longitude);
  if (!Number.isFinite(latitude) || !Number.isFinite(longitude)) return null;
  return { latitude, longitude, name: text(value.name), address: text(value.address) };
}

/** @param {unknown} value */
function coordinate(value) {
  if (typeof value === 'number') return value;
  return typeof value === 'string' && value.trim() !== '' ? Number(value) : Number.NaN;
}
