// The Baileys driver of the DashOffice bridge (docs/bridges.md, "Driver interface"): one
// WhatsApp Web session over Baileys' WebSocket, with its multi-file auth state in the
// session's own directory. The pure mapping functions (message and ack normalisation,
// JIDs, disconnect classification) are exported for the tests.

import {
  DisconnectReason,
  downloadMediaMessage,
  getContentType,
  makeWASocket,
  normalizeMessageContent,
  useMultiFileAuthState,
} from 'baileys';
import { BridgeError, lidJid, phoneDigits, recipientJid, splitJid } from '@dashoffice/bridge-common';

/** Baileys content types of each media kind (stickers are images, voice notes audio). */
const MEDIA_TYPES = new Map([
  ['imageMessage', 'image'],
  ['stickerMessage', 'image'],
  ['videoMessage', 'video'],
  ['ptvMessage', 'video'],
  ['audioMessage', 'audio'],
  ['documentMessage', 'document'],
]);

/** Content types that carry no user message (key distribution, revokes, edits...). */
const SILENT_TYPES = new Set(['protocolMessage', 'senderKeyDistributionMessage', 'messageContextInfo', 'reactionMessage']);

/** Baileys' WebMessageInfo.Status (0 ERROR ... 5 PLAYED) as the contract's ack names. */
const ACK_OF_STATUS = ['failed', 'pending', 'sent', 'delivered', 'read', 'played'];

/** Close codes the operator has to look at (docs/bridges.md: failed on 403, 411, 500). */
const FATAL_CODES = new Set([DisconnectReason.forbidden, DisconnectReason.multideviceMismatch, DisconnectReason.badSession]);

/**
 * The library JID of a contract recipient: digits → `<digits>@s.whatsapp.net`, a LID JID
 * passes through; a BridgeError `invalid_recipient` otherwise.
 * @param {unknown} to
 */
export function toJid(to) {
  try {
    return recipientJid(/** @type {string} */ (to), 's.whatsapp.net');
  } catch (err) {
    throw new BridgeError('invalid_recipient', /** @type {Error} */ (err).message);
  }
}

/**
 * The paired phone's digits from `sock.user.id` (`15551234567:12@s.whatsapp.net`).
 * @param {unknown} userId
 */
export function phoneOfUser(userId) {
  return phoneDigits(userId) ?? (typeof userId === 'string' ? userId : null);
}

/**
 * What a `connection.update` close means: `{kind: 'logged_out' | 'failed' | 'disconnected',
 * statusCode, reason}` (401 logged out, 403/411/500 failed, anything else reconnects).
 * @param {any} lastDisconnect `{error, date}` of the update
 */
export function classifyDisconnect(lastDisconnect) {
  const error = lastDisconnect?.error;
  const statusCode = error?.output?.statusCode ?? error?.output?.payload?.statusCode ?? null;
  const name = statusCode !== null ? DisconnectReason[statusCode] : undefined;
  const message = typeof error?.message === 'string' && error.message ? error.message : null;
  const head = [statusCode, name].filter((part) => part !== null && part !== undefined).join(' ');
  const reason = (head && message && message !== name ? `${head}: ${message}` : head || message) || 'connection closed';
  if (statusCode === DisconnectReason.loggedOut) return { kind: 'logged_out', statusCode, reason };
  if (FATAL_CODES.has(statusCode)) return { kind: 'failed', statusCode, reason };
  return { kind: 'disconnected', statusCode, reason };
}

/** Unix seconds of a messageTimestamp (number, string or Long). @param {any} value */
export function timestampSeconds(value) {
  if (value === null || value === undefined) return null;
  const n = typeof value === 'object' && typeof value.toNumber === 'function' ? value.toNumber() : Number(value);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : null;
}

/**
 * A Baileys WAMessage as the driver's `message` data (docs/bridges.md), or null when it
 * carries nothing to post (no content, protocol messages, no ids).
 * @param {any} m
 */
export function normaliseBaileysMessage(m) {
  const key = m?.key ?? {};
  const chatId = typeof key.remoteJid === 'string' ? key.remoteJid : null;
  const messageId = typeof key.id === 'string' ? key.id : null;
  if (!chatId || !messageId) return null;
  const content = normalizeMessageContent(m.message);
  if (!content) return null;
  const type = getContentType(content) ?? 'unknown';
  if (SILENT_TYPES.has(type)) return null;

  // phone / lid: remoteJidAlt is the other spelling of the chat's user when Baileys knows it.
  let phone = null;
  let lid = null;
  const alt = key.remoteJidAlt ?? null;
  const chat = splitJid(chatId);
  if (chat?.server === 'lid') phone = phoneDigits(alt);
  else if (chat && (chat.server === 's.whatsapp.net' || chat.server === 'c.us')) lid = lidJid(alt);

  const body = content[type] ?? {};
  const kind = MEDIA_TYPES.get(type) ?? null;
  const caption = typeof body?.caption === 'string' ? body.caption : null;
  const text =
    content.conversation ??
    content.extendedTextMessage?.text ??
    content.imageMessage?.caption ??
    content.videoMessage?.caption ??
    content.documentMessage?.caption ??
    content.documentWithCaptionMessage?.message?.documentMessage?.caption ??
    content.buttonsResponseMessage?.selectedDisplayText ??
    content.listResponseMessage?.title ??
    '';
  const replyId =
    content.buttonsResponseMessage?.selectedButtonId ??
    content.listResponseMessage?.singleSelectReply?.selectedRowId ??
    content.templateButtonReplyMessage?.selectedId ??
    null;
  const loc = content.locationMessage ?? content.liveLocationMessage ?? null;
  const isGroup = chatId.endsWith('@g.us');
  return {
    message_id: messageId,
    chat_id: chatId,
    sender_id: key.participant ?? chatId,
    phone,
    lid,
    from_me: key.fromMe === true,
    timestamp_s: timestampSeconds(m.messageTimestamp),
    type,
    text: typeof text === 'string' ? text : '',
    has_media: kind !== null,
    media: kind
      ? {
          kind,
          mime_type: body.mimetype ?? null,
          caption,
          filename: body.fileName ?? null,
        }
      : null,
    reply_id: replyId,
    location:
      loc && typeof loc.degreesLatitude === 'number'
        ? { latitude: loc.degreesLatitude, longitude: loc.degreesLongitude, name: loc.name ?? null, address: loc.address ?? null }
        : null,
    push_name: m.pushName ?? null,
    is_group: isGroup,
  };
}

/**
 * A `messages.update` entry as the driver's `ack` data, or null when it is no status
 * change of one of our messages.
 * @param {any} entry `{key, update}`
 */
export function normaliseBaileysAck(entry) {
  const key = entry?.key;
  const status = entry?.update?.status;
  if (!key?.id || typeof status !== 'number' || key.fromMe === false) return null;
  const ack = ACK_OF_STATUS[status];
  if (!ack) return null;
  const data = { id: key.id, ack, chat_id: key.remoteJid ?? undefined };
  const ts = timestampSeconds(entry.update.messageTimestamp);
  if (ts) data.timestamp_s = ts;
  return data;
}

/**
 * A LID mapping event (`lid-mapping.update` `{lid, pn}`) as `lid_mapping` data, or null.
 * @param {any} mapping
 */
export function normaliseLidMapping(mapping) {
  const lid = lidJid(mapping?.lid);
  const phone = phoneDigits(mapping?.pn ?? mapping?.phone);
  return lid && phone ? { lid, phone } : null;
}

/** The media message of a `sendMedia` call (by URL, or the uploaded bytes). @param {{kind: string, url: string | null, data?: Buffer | null, caption: string | null, filename: string | null, mimeType: string | null}} media */
export function mediaContent({ kind, url, data, caption, filename, mimeType }) {
  if (!['image', 'video', 'audio', 'document'].includes(kind)) throw new BridgeError('invalid_request', `unknown media kind ${JSON.stringify(kind)}`);
  /** @type {Record<string, any>} */
  // An uploaded file goes as its bytes; otherwise Baileys downloads the URL itself.
  const content = { [kind]: Buffer.isBuffer(data) ? data : { url } };
  if (caption && kind !== 'audio') content.caption = caption;
  if (mimeType) content.mimetype = mimeType;
  if (kind === 'document') {
    content.fileName = filename ?? 'file';
    if (!content.mimetype) content.mimetype = 'application/octet-stream';
  }
  return content;
}

/**
 * Baileys' ILogger over the bridge's logger: warnings and errors only (Baileys is chatty).
 * @param {import('@dashoffice/bridge-common/src/log.js').Logger | any} log
 * @param {Record<string, unknown>} [bindings]
 */
function baileysLogger(log, bindings = {}) {
  const forward = (/** @type {'warn' | 'error'} */ level) => (/** @type {any} */ obj, /** @type {string | undefined} */ msg) => {
    const text = msg ?? (typeof obj === 'string' ? obj : 'baileys');
    const fields = obj && typeof obj === 'object' ? { ...bindings, detail: obj instanceof Error ? obj.message : safe(obj) } : { ...bindings };
    log?.[level]?.(`baileys: ${text}`, fields);
  };
  const noop = () => {};
  return {
    level: 'warn',
    child: (/** @type {Record<string, unknown>} */ obj) => baileysLogger(log, { ...bindings, ...obj }),
    trace: noop,
    debug: noop,
    info: noop,
    warn: forward('warn'),
    error: forward('error'),
  };
}

/** @param {any} obj */
function safe(obj) {
  try {
    const text = JSON.stringify(obj, (_k, v) => (typeof v === 'bigint' ? String(v) : v));
    return text && text.length > 500 ? `${text.slice(0, 500)}...` : text;
  } catch {
    return String(obj);
  }
}

/**
 * The driver factory of the bridge.
 * @param {import('@dashoffice/bridge-common/src/sessions.js').DriverContext} context
 */
export function driverFactory(context) {
  return new BaileysDriver(context);
}

export class BaileysDriver {
  /** @param {any} context */
  constructor(context) {
    this.context = context;
    this.log = context.log;
    /** @type {any} */
    this.sock = null;
    this.stopped = false;
    this.pairingRequested = false;
  }

  /** @param {any} type @param {any} [data] */
  emit(type, data) {
    if (!this.stopped) this.context.emit(type, data);
  }

  async start() {
    const { state, saveCreds } = await useMultiFileAuthState(this.context.dataDir);
    const logger = baileysLogger(this.log, { session: this.context.session });
    const sock = makeWASocket({
      auth: state,
      logger,
      markOnlineOnConnect: false,
      syncFullHistory: false,
      ...(this.context.socketOptions ?? {}),
    });
    this.sock = sock;
    let wasRegistered = Boolean(state.creds.registered);

    sock.ev.on('creds.update', async (update) => {
      try {
        await saveCreds();
      } catch (err) {
        this.log?.error?.('cannot save the Baileys credentials', { error: err });
      }
      if (!wasRegistered && (update.registered || update.me)) {
        wasRegistered = true;
        this.emit('authenticated', {});
      }
    });

    sock.ev.on('connection.update', (update) => {
      const { connection, lastDisconnect, qr } = update;
      if (qr) {
        if (this.context.pairingPhone && !state.creds.registered) this.#requestPairingCode(sock);
        else this.emit('qr', { qr });
      }
      if (connection === 'open') {
        this.emit('ready', { phone: phoneOfUser(sock.user?.id) });
      } else if (connection === 'close') {
        const closed = classifyDisconnect(lastDisconnect);
        if (closed.kind === 'failed') this.emit('failed', { reason: closed.reason });
        else this.emit('disconnected', { reason: closed.reason, loggedOut: closed.kind === 'logged_out' });
      }
    });

    sock.ev.on('messages.upsert', async ({ messages, type }) => {
      if (type !== 'notify') return;
      for (const m of messages) {
        const data = normaliseBaileysMessage(m);
        if (!data) continue;
        if (data.media && !data.is_group && !data.from_me) {
          try {
            data.media.data = await downloadMediaMessage(m, 'buffer', {}, { logger, reuploadRequest: sock.updateMediaMessage });
          } catch (err) {
            this.log?.warn?.('cannot download a media message', { message_id: data.message_id, error: /** @type {Error} */ (err).message });
          }
        }
        this.emit('message', data);
      }
    });

    sock.ev.on('messages.update', (updates) => {
      for (const entry of updates) {
        const data = normaliseBaileysAck(entry);
        if (data) this.emit('ack', data);
      }
    });

    sock.ev.on('lid-mapping.update', (mapping) => {
      const data = normaliseLidMapping(mapping);
      if (data) this.emit('lid_mapping', data);
    });
  }

  /** Asks once for a pairing code (Baileys wants the socket to be connecting, i.e. at the first QR). @param {any} sock */
  async #requestPairingCode(sock) {
    if (this.pairingRequested) return;
    this.pairingRequested = true;
    try {
      const code = await sock.requestPairingCode(String(this.context.pairingPhone).replace(/\D/g, ''));
      this.emit('pairing_code', { code });
    } catch (err) {
      this.log?.error?.('pairing code request failed', { error: /** @type {Error} */ (err).message });
      this.emit('failed', { reason: `pairing code request failed: ${/** @type {Error} */ (err).message}` });
    }
  }

  #socket() {
    if (!this.sock || this.stopped) throw new BridgeError('session_not_ready', 'the session is not connected');
    return this.sock;
  }

  /** @param {{to: string, text: string, replyTo: string | null}} message */
  async send({ to, text }) {
    const sock = this.#socket();
    const sent = await sock.sendMessage(toJid(to), { text });
    return sent?.key?.id;
  }

  /** @param {{to: string, kind: string, url: string, caption: string | null, filename: string | null, mimeType: string | null}} message */
  async sendMedia(message) {
    const sock = this.#socket();
    const sent = await sock.sendMessage(toJid(message.to), mediaContent(message));
    return sent?.key?.id;
  }

  async logout() {
    const sock = this.sock;
    this.stopped = true;
    if (sock) await sock.logout();
  }

  async stop() {
    const sock = this.sock;
    this.stopped = true;
    if (sock) {
      await sock.end(undefined);
    }
  }
}
