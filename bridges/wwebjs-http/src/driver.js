// The whatsapp-web.js driver of the DashOffice bridge (docs/bridges.md, "Driver interface"):
// one WhatsApp Web session in a headless Chromium (the system's, CHROMIUM_PATH), with its
// browser profile (LocalAuth) in the session's own directory. The pure parts (client
// options, message and ack normalisation, JIDs, disconnect classification, send errors)
// are exported for the tests.

import { join } from 'node:path';
import wwebjs from 'whatsapp-web.js';
import { BridgeError, downloadMedia, lidJid, mediaKindOfType, phoneDigits, recipientJid, splitJid } from '@dashoffice/bridge-common';

const { Client, LocalAuth, MessageMedia } = wwebjs;

/** The browser when the bridge names none (Debian's `chromium` package). */
export const DEFAULT_CHROMIUM_PATH = '/usr/bin/chromium';

/**
 * Chromium's switches: no sandbox (the bridge usually runs as root or in a container, where
 * Chromium's sandbox cannot start), /tmp instead of a small /dev/shm, nothing the session
 * does not need.
 */
export const CHROMIUM_ARGS = Object.freeze([
  '--no-sandbox',
  '--disable-setuid-sandbox',
  '--disable-dev-shm-usage',
  '--disable-gpu',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-extensions',
  '--mute-audio',
]);

/** How often whatsapp-web.js asks for a new pairing code (WhatsApp's codes last 3 minutes). */
const PAIRING_CODE_INTERVAL_MS = 180_000;

/** Bounds on the page calls made for one incoming message. */
const MEDIA_DOWNLOAD_TIMEOUT_MS = 60_000;
const LID_LOOKUP_TIMEOUT_MS = 5_000;

/** Message types that carry nothing a person wrote (notifications, protocol, undecrypted...). */
const SILENT_TYPES = new Set([
  'e2e_notification',
  'notification',
  'notification_template',
  'gp2',
  'group_notification',
  'broadcast_notification',
  'call_log',
  'protocol',
  'ciphertext',
  'revoked',
  'debug',
  'reaction',
]);

/** `disconnected` reasons that mean the phone unpaired the session (a new QR is needed). */
const LOGGED_OUT_REASONS = new Set(['LOGOUT', 'UNPAIRED', 'UNPAIRED_IDLE']);

/** `disconnected` reasons an operator has to look at (account blocked, WhatsApp Web too old). */
const FATAL_REASONS = new Set(['TOS_BLOCK', 'SMB_TOS_BLOCK', 'PROXYBLOCK', 'DEPRECATED_VERSION']);

/**
 * The library JID of a contract recipient: digits → `<digits>@c.us`, a LID JID passes
 * through; a BridgeError `invalid_recipient` otherwise.
 * @param {unknown} to
 */
export function toJid(to) {
  try {
    return recipientJid(/** @type {string} */ (to), 'c.us');
  } catch (err) {
    throw new BridgeError('invalid_recipient', /** @type {Error} */ (err).message);
  }
}

/**
 * The whatsapp-web.js Client options of a session.
 *
 * - LocalAuth keeps the browser profile in `<dataDir>/session-<session>/`;
 * - puppeteer drives `chromiumPath` (headless, {@link CHROMIUM_ARGS}) and leaves the
 *   process's signals to the bridge, which stops every session itself;
 * - `WWEBJS_WEB_VERSION` pins the WhatsApp Web version; with `WWEBJS_WEB_VERSION_CACHE_URL`
 *   (a URL with `{version}` in it) that version's page comes from there and a session does
 *   not start without it; otherwise from `<dataDir>/web-cache/<version>.html` when present
 *   (whatsapp-web.js saves the page it ran there after a login), else WhatsApp's current one;
 * - a pairing phone makes the library ask for pairing codes instead of QRs.
 * @param {{session: string, dataDir: string, chromiumPath?: string | null, pairingPhone?: string | null}} context
 * @param {Record<string, string | undefined>} [env]
 */
export function clientOptions({ session, dataDir, chromiumPath, pairingPhone }, env = process.env) {
  const version = env.WWEBJS_WEB_VERSION?.trim() || null;
  const cacheUrl = env.WWEBJS_WEB_VERSION_CACHE_URL?.trim() || null;
  /** @type {Record<string, any>} */
  const options = {
    authStrategy: new LocalAuth({ clientId: session, dataPath: dataDir }),
    puppeteer: {
      executablePath: chromiumPath || DEFAULT_CHROMIUM_PATH,
      headless: true,
      args: [...CHROMIUM_ARGS],
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    },
    webVersionCache: cacheUrl
      ? { type: 'remote', remotePath: cacheUrl, strict: true }
      : { type: 'local', path: join(dataDir, 'web-cache'), strict: false },
  };
  if (version) options.webVersion = version;
  const digits = pairingPhone ? String(pairingPhone).replace(/\D/g, '') : '';
  if (digits) options.pairWithPhoneNumber = { phoneNumber: digits, showNotification: true, intervalMs: PAIRING_CODE_INTERVAL_MS };
  return options;
}

/**
 * A pairing code as WhatsApp shows it on the phone: `ABCDEFGH` → `ABCD-EFGH`; other shapes as
 * they are.
 * @param {unknown} code
 */
export function pairingCodeOf(code) {
  const text = typeof code === 'string' ? code.trim() : '';
  return /^[A-Z0-9]{8}$/i.test(text) ? `${text.slice(0, 4)}-${text.slice(4)}`.toUpperCase() : text;
}

/**
 * The paired phone of `client.info`: the digits of `info.wid` when it is a phone JID
 * (`15551234567@c.us`), null when WhatsApp Web only knows the account's LID.
 * @param {any} info
 */
export function phoneOfInfo(info) {
  const wid = info?.wid;
  if (!wid) return null;
  const jid = typeof wid === 'string' ? wid : (wid._serialized ?? (wid.user && wid.server ? `${wid.user}@${wid.server}` : null));
  return phoneDigits(jid);
}

/**
 * What a `disconnected` reason means: `{kind: 'logged_out' | 'failed' | 'disconnected', reason}`.
 * `LOGOUT` (from the phone, or the page's post-logout navigation), `UNPAIRED` and
 * `UNPAIRED_IDLE` log out; blocks and a deprecated WhatsApp Web version need the operator;
 * anything else (`CONFLICT`, `Max qrcode retries reached`, a closed browser) reconnects.
 * @param {unknown} reason
 */
export function classifyDisconnect(reason) {
  const text = typeof reason === 'string' && reason.trim() ? reason.trim() : reason instanceof Error ? reason.message : 'disconnected';
  const name = text.toUpperCase();
  if (LOGGED_OUT_REASONS.has(name)) return { kind: 'logged_out', reason: text };
  if (FATAL_REASONS.has(name)) return { kind: 'failed', reason: text };
  return { kind: 'disconnected', reason: text };
}

/** A serialized id of a whatsapp-web.js id or wid (`{_serialized}`), or the string itself. @param {any} value */
function serialized(value) {
  if (typeof value === 'string') return value || null;
  if (value && typeof value === 'object' && typeof value._serialized === 'string') return value._serialized || null;
  return null;
}

/** @param {unknown} value */
function textOrNull(value) {
  return typeof value === 'string' && value !== '' ? value : null;
}

/** Unix seconds of a whatsapp-web.js timestamp (seconds; milliseconds are recognised). @param {unknown} value */
export function timestampSeconds(value) {
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) return null;
  return Math.floor(n > 1e11 ? n / 1000 : n);
}

/**
 * A whatsapp-web.js Message as the driver's `message` data (docs/bridges.md, the
 * whatsapp-web.js column), or null when it carries nothing to post (no ids, notifications,
 * protocol or undecrypted messages). `phone`/`lid` are left null: they need the page
 * ({@link lidPairOf}). Media bytes are not fetched here (`downloadMedia()` does that).
 * @param {any} msg a Message (or its documented JSON shape)
 */
export function normaliseWwebjsMessage(msg) {
  const messageId = serialized(msg?.id);
  const fromMe = msg?.fromMe === true || msg?.id?.fromMe === true;
  const from = serialized(msg?.from);
  const to = serialized(msg?.to);
  const chatId = (fromMe ? to : from) ?? serialized(msg?.id?.remote);
  if (!messageId || !chatId) return null;
  const type = typeof msg.type === 'string' && msg.type ? msg.type : 'unknown';
  if (SILENT_TYPES.has(type)) return null;

  // hasMedia is whether the media can be downloaded; an expired one still makes a media message.
  const hasMedia = msg.hasMedia === true;
  const kind = mediaKindOfType(type) ?? (hasMedia ? 'document' : null);
  const body = typeof msg.body === 'string' ? msg.body : '';
  const loc = msg.location && typeof msg.location === 'object' ? msg.location : null;
  const latitude = loc ? Number(loc.latitude) : Number.NaN;
  const longitude = loc ? Number(loc.longitude) : Number.NaN;
  const location =
    loc && Number.isFinite(latitude) && Number.isFinite(longitude)
      ? { latitude, longitude, name: textOrNull(loc.name), address: textOrNull(loc.address) }
      : null;
  // A location's body is its map thumbnail (base64 JPEG), not text.
  const text = type === 'location' ? [location?.name, location?.address].filter(Boolean).join('\n') : body;
  const data = msg._data ?? {};
  return {
    message_id: messageId,
    chat_id: chatId,
    sender_id: serialized(msg.author) ?? from ?? chatId,
    phone: null,
    lid: null,
    from_me: fromMe,
    timestamp_s: timestampSeconds(msg.timestamp),
    type,
    text,
    has_media: hasMedia || kind !== null,
    media:
      kind
        ? {
            kind,
            mime_type: textOrNull(data.mimetype),
            caption: body || null,
            filename: textOrNull(data.filename),
          }
        : null,
    reply_id: textOrNull(msg.selectedButtonId) ?? textOrNull(msg.selectedRowId),
    location,
    push_name: fromMe ? null : textOrNull(data.notifyName),
    is_group: chatId.endsWith('@g.us'),
  };
}

/**
 * The media `downloadMedia()` gave (`MessageMedia {mimetype, data (base64), filename}`)
 * merged into a message's `media`: `data` for the server to store, the MIME type and file
 * name when the message had none. The message as it was when nothing came.
 * @param {ReturnType<typeof normaliseWwebjsMessage>} data
 * @param {any} media
 */
export function withDownloadedMedia(data, media) {
  if (!data?.media || !media || typeof media.data !== 'string' || media.data === '') return data;
  return {
    ...data,
    media: {
      ...data.media,
      mime_type: data.media.mime_type ?? textOrNull(media.mimetype),
      filename: data.media.filename ?? textOrNull(media.filename),
      data: media.data,
    },
  };
}

/**
 * A `message_ack (msg, ack)` as the driver's `ack` data: the whatsapp-web.js number as it is
 * (`-1` failed ... `4` played), for the messages this account sent; null otherwise.
 * @param {any} msg
 * @param {unknown} ack
 */
export function ackOf(msg, ack) {
  const id = serialized(msg?.id);
  const fromMe = msg?.fromMe === true || msg?.id?.fromMe === true;
  const value = typeof ack === 'number' ? ack : typeof msg?.ack === 'number' ? msg.ack : null;
  if (!id || !fromMe || value === null || !Number.isInteger(value) || value < -1 || value > 4) return null;
  /** @type {{id: string, ack: number, chat_id?: string}} */
  const data = { id, ack: value };
  const chatId = serialized(msg.to) ?? serialized(msg.id?.remote);
  if (chatId) data.chat_id = chatId;
  return data;
}

/**
 * The `{lid, phone}` pair of a `getContactLidAndPhone` answer (`[{lid, pn}]`), or null when
 * it lacks either side.
 * @param {any} answer
 */
export function lidPairOf(answer) {
  const entry = Array.isArray(answer) ? answer[0] : answer;
  const lid = lidJid(serialized(entry?.lid));
  const phone = phoneDigits(serialized(entry?.pn ?? entry?.phone));
  return lid && phone ? { lid, phone } : null;
}

/**
 * The contract error a failed `sendMessage` answers: a BridgeError as it is; WhatsApp
 * Web's "invalid wid" is `invalid_recipient`; a browser or page that went away is
 * `session_not_ready`; throttling is `rate_limited`; anything else as it is (500 `internal`).
 * @param {unknown} err
 */
export function sendErrorOf(err) {
  if (err instanceof BridgeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/invalid wid/i.test(message)) return new BridgeError('invalid_recipient', message, { cause: err });
  if (/session closed|target closed|detached frame|execution context was destroyed|connection closed|browser has disconnected|not opened|protocol error/i.test(message)) {
    return new BridgeError('session_not_ready', message, { cause: err });
  }
  if (/rate-overlimit|too many requests|\b429\b/i.test(message)) return new BridgeError('rate_limited', message, { cause: err });
  return err instanceof Error ? err : new Error(message);
}

/**
 * The options of a `sendMedia` call: documents as documents, captions on everything but
 * audio.
 * @param {{kind: string, caption?: string | null}} media
 */
export function mediaSendOptions({ kind, caption }) {
  if (!['image', 'video', 'audio', 'document'].includes(kind)) throw new BridgeError('invalid_request', `unknown media kind ${JSON.stringify(kind)}`);
  /** @type {Record<string, any>} */
  const options = { sendSeen: false };
  if (caption && kind !== 'audio') options.caption = caption;
  if (kind === 'document') options.sendMediaAsDocument = true;
  return options;
}

/** An Error of whatever the library threw (it throws strings too). @param {unknown} err */
function asError(err) {
  return err instanceof Error ? err : new Error(typeof err === 'string' ? err : JSON.stringify(err));
}

/**
 * Resolves with `promise`, or rejects after `ms`.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
function within(promise, ms, what) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
    timer.unref();
  });
  return /** @type {Promise<T>} */ (Promise.race([promise, timeout]).finally(() => clearTimeout(timer)));
}

/**
 * The driver factory of the bridge.
 * @param {import('@dashoffice/bridge-common/src/sessions.js').DriverContext} context
 */
export function driverFactory(context) {
  return new WwebjsDriver(context);
}

export class WwebjsDriver {
  /** @param {any} context */
  constructor(context) {
    this.context = context;
    this.log = context.log;
    /** @type {any} */
    this.client = null;
    this.stopped = false;
    this.ready = false;
    /** Whether `initialize()` is under way (the browser may be launching). */
    this.initializing = false;
    /** Incoming messages and acks, in the order the page reported them. */
    this.queue = Promise.resolve();
    /** @type {Map<string, {lid: string, phone: string} | null>} chat id → LID pair (null: unknown) */
    this.lidPairs = new Map();
    /** @type {Map<string, string>} recipient digits → the JID WhatsApp answered for them */
    this.numberIds = new Map();
  }

  /** @param {string} type @param {any} [data] */
  emit(type, data) {
    if (!this.stopped) this.context.emit(type, data);
  }

  async start() {
    // `createClient` lets the tests put a scripted client in the library's place.
    const create = this.context.createClient ?? ((/** @type {any} */ options) => new Client(options));
    const client = create(clientOptions(this.context));
    this.client = client;

    client.on('qr', (qr) => this.emit('qr', { qr }));
    client.on('code', (code) => this.emit('pairing_code', { code: pairingCodeOf(code) }));
    client.on('loading_screen', (percent, message) => this.log?.debug?.('whatsapp-web.js loading', { percent, message }));
    client.on('change_state', (state) => this.log?.debug?.('whatsapp-web.js state', { state }));
    client.on('authenticated', () => this.emit('authenticated', {}));
    client.on('auth_failure', (message) => {
      this.ready = false;
      this.emit('failed', { reason: `auth_failure: ${typeof message === 'string' && message ? message : 'the stored session could not be restored'}` });
    });
    client.on('ready', () => {
      this.ready = true;
      this.emit('ready', { phone: phoneOfInfo(client.info) });
    });
    client.on('disconnected', (reason) => {
      this.ready = false;
      const closed = classifyDisconnect(reason);
      if (closed.kind === 'failed') this.emit('failed', { reason: closed.reason });
      else this.emit('disconnected', { reason: closed.reason, loggedOut: closed.kind === 'logged_out' });
    });
    client.on('message', (msg) => this.#enqueue(() => this.#onMessage(msg)));
    client.on('message_create', (msg) => {
      // `message` covers the others; own messages: those sent from the phone, and the
      // bridge's own sends, which the server drops by id.
      if (msg?.fromMe === true) this.#enqueue(() => this.#onMessage(msg));
    });
    client.on('message_ack', (msg, ack) => {
      const data = ackOf(msg, ack);
      if (data) this.#enqueue(() => this.emit('ack', data));
    });

    this.initializing = true;
    try {
      await client.initialize();
    } catch (err) {
      // The server stops this driver and starts another; a browser that is not there will
      // not appear by retrying, so that one marks the session failed for the operator.
      const error = asError(err);
      if (/Browser was not found at the configured executablePath/i.test(error.message)) Object.assign(error, { fatal: true });
      throw error;
    } finally {
      this.initializing = false;
      // Stopped while the browser was still launching: do not leave it behind.
      if (this.stopped) await client.destroy().catch(() => {});
    }
  }

  /** @param {() => Promise<void> | void} task */
  #enqueue(task) {
    this.queue = this.queue.then(task).catch((err) => this.log?.error?.('whatsapp-web.js event not handled', { error: asError(err).message }));
  }

  /** @param {any} msg */
  async #onMessage(msg) {
    let data = normaliseWwebjsMessage(msg);
    if (!data || this.stopped) return;
    if (!data.is_group) {
      const pair = await this.#lidPair(data.chat_id);
      if (pair) {
        if (splitJid(data.chat_id)?.server === 'lid') data.phone = pair.phone;
        else data.lid = pair.lid;
      }
      if (data.media && !data.from_me) {
        try {
          data = withDownloadedMedia(data, await within(Promise.resolve(msg.downloadMedia()), MEDIA_DOWNLOAD_TIMEOUT_MS, 'downloadMedia'));
        } catch (err) {
          this.log?.warn?.('cannot download a media message', { message_id: data?.message_id, error: asError(err).message });
        }
      }
    }
    this.emit('message', data);
  }

  /**
   * The LID ↔ phone pair of a one-to-one chat, asked once per chat; a new pair is also
   * reported as `lid_mapping`.
   * @param {string} chatId
   */
  async #lidPair(chatId) {
    const jid = splitJid(chatId);
    if (!jid || !['lid', 'c.us', 's.whatsapp.net'].includes(jid.server)) return null;
    if (this.lidPairs.has(chatId)) return this.lidPairs.get(chatId) ?? null;
    if (typeof this.client?.getContactLidAndPhone !== 'function') return null;
    let pair = null;
    try {
      pair = lidPairOf(await within(this.client.getContactLidAndPhone([chatId]), LID_LOOKUP_TIMEOUT_MS, 'getContactLidAndPhone'));
    } catch (err) {
      this.log?.debug?.('no LID/phone for a chat', { chat_id: chatId, error: asError(err).message });
      return null; // asked again next time
    }
    this.lidPairs.set(chatId, pair);
    if (pair) this.emit('lid_mapping', pair);
    return pair;
  }

  #readyClient() {
    if (!this.client || this.stopped || !this.ready) throw new BridgeError('session_not_ready', 'the session is not ready');
    return this.client;
  }

  /**
   * The chat to send to: a LID as it is; digits as the JID WhatsApp knows for them (which
   * may differ, e.g. Brazilian numbers without the ninth digit), `invalid_recipient` when
   * the number is not on WhatsApp. A failed lookup does not stop the send.
   * @param {any} client
   * @param {string} to
   */
  async #chatOf(client, to) {
    const jid = toJid(to);
    const digits = phoneDigits(jid);
    if (!digits) return jid;
    const known = this.numberIds.get(digits);
    if (known) return known;
    let answer;
    try {
      answer = await client.getNumberId(digits);
    } catch (err) {
      this.log?.warn?.('getNumberId failed; sending to the number as given', { error: asError(err).message });
      return jid;
    }
    if (!answer) throw new BridgeError('invalid_recipient', `${digits} is not on WhatsApp`);
    const resolved = serialized(answer) ?? jid;
    this.numberIds.set(digits, resolved);
    return resolved;
  }

  /**
   * @param {any} client
   * @param {string} chatId
   * @param {any} content
   * @param {Record<string, any>} options
   */
  async #send(client, chatId, content, options) {
    let sent;
    try {
      sent = await client.sendMessage(chatId, content, options);
    } catch (err) {
      throw sendErrorOf(err);
    }
    const id = serialized(sent?.id);
    if (!id) throw new BridgeError('invalid_recipient', `WhatsApp Web has no chat for ${chatId}`);
    return id;
  }

  /** @param {{to: string, text: string, replyTo: string | null}} message */
  async send({ to, text, replyTo }) {
    const client = this.#readyClient();
    const chatId = await this.#chatOf(client, to).catch((err) => Promise.reject(sendErrorOf(err)));
    /** @type {Record<string, any>} */
    const options = { sendSeen: false };
    if (replyTo) options.quotedMessageId = replyTo;
    return this.#send(client, chatId, text, options);
  }

  /**
   * Media by link (`url`, downloaded here with the server's `downloadMedia`, which checks the
   * answer's status and bounds its size and time, unlike `MessageMedia.fromUrl`) or uploaded
   * (`data`, with `mimeType`), sent as a MessageMedia.
   * @param {{to: string, kind: string, url?: string | null, data?: Buffer | null, caption: string | null, filename: string | null, mimeType: string | null}} message
   */
  async sendMedia({ to, kind, url = null, data = null, caption, filename, mimeType }) {
    const client = this.#readyClient();
    const options = mediaSendOptions({ kind, caption });
    const chatId = await this.#chatOf(client, to).catch((err) => Promise.reject(sendErrorOf(err)));
    /** @type {{data: Buffer, mimeType: string | null, filename: string | null}} */
    let file;
    if (data) {
      file = { data: Buffer.from(data), mimeType: null, filename: null };
    } else if (url) {
      try {
        file = await downloadMedia(url);
      } catch (err) {
        const message = asError(err).message;
        // The URL answered but refuses (4xx): retrying will not help.
        if (/answered HTTP 4\d\d/.test(message)) throw new BridgeError('invalid_request', `cannot download the media: ${message}`);
        throw new Error(`cannot download the media: ${message}`);
      }
    } else {
      throw new BridgeError('invalid_request', 'the media has neither url nor data');
    }
    const type = mimeType ?? file.mimeType ?? (kind === 'document' ? 'application/octet-stream' : null);
    if (!type) throw new BridgeError('invalid_request', 'the media has no MIME type: give mime_type');
    const name = filename ?? file.filename ?? (kind === 'document' ? 'file' : null);
    const media = new MessageMedia(type, file.data.toString('base64'), name, file.data.length);
    return this.#send(client, chatId, media, options);
  }

  async logout() {
    const client = this.client;
    this.stopped = true;
    this.ready = false;
    if (!client) return;
    if (client.pupPage && !client.pupPage.isClosed?.()) {
      try {
        await client.logout();
        return;
      } catch (err) {
        this.log?.warn?.('whatsapp-web.js logout failed; closing the browser', { error: asError(err).message });
      }
    }
    await this.#destroy(client);
  }

  async stop() {
    const client = this.client;
    this.stopped = true;
    this.ready = false;
    if (client) await this.#destroy(client);
  }

  /**
   * Closes the browser, waiting (a few seconds at most) for one that is still being launched.
   * @param {any} client
   */
  async #destroy(client) {
    for (let waited = 0; !client.pupBrowser && this.initializing && waited < 5000; waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    try {
      await client.destroy();
    } catch (err) {
      this.log?.warn?.('whatsapp-web.js destroy failed; killing the browser', { error: asError(err).message });
      client.pupBrowser?.process?.()?.kill('SIGKILL');
    }
  }
}
