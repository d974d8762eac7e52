// The bridge contract server (docs/bridges.md): the HTTP API dashd calls, in front of
// the sessions (sessions.js) whose drivers wrap one WhatsApp Web library, and the event
// queue (events.js) that posts what happens to dashd.
//
// Every request is authorised first (bearer token, compared in constant time; 401
// before anything else, the body unread), then routed. Failures answer
// {"error": {"code", "message"}}; internals are logged, the message names the problem
// for the operator.

import { createHash, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import http from 'node:http';
import { e164, lidJid, parseRecipient } from './address.js';
import { BridgeError, toBridgeError } from './errors.js';
import { EventQueue } from './events.js';
import { SerialQueue } from './files.js';
import { IdempotencyStore } from './idempotency.js';
import { LidMap } from './lid.js';
import { createLogger } from './log.js';
import { MediaStore } from './media.js';
import { EchoFilter, normaliseAck, normaliseMessage } from './messages.js';
import { SESSION_NAME, SessionManager } from './sessions.js';

/** The contract version this server speaks. */
export const CONTRACT_VERSION = 1;

const MEDIA_KINDS = new Set(['image', 'video', 'audio', 'document']);
const MIME_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(\s*;.*)?$/;
/** Base64 in the standard (`+/`) or the URL-safe (`-_`) alphabet, padded or not. */
const BASE64 = /^(?:[A-Za-z0-9+/]*|[A-Za-z0-9_-]*)={0,2}$/;
const MAX_TEXT_CHARS = 65536;

/**
 * @typedef {object} BridgeTimings
 * @property {number} [eventRetryMinMs] 1 s
 * @property {number} [eventRetryMaxMs] 5 min
 * @property {number} [eventRequestTimeoutMs] 10 s
 * @property {number} [reconnectMinMs] 1 s
 * @property {number} [reconnectMaxMs] 60 s
 * @property {number} [startTimeoutMs] 3 min
 * @property {number} [stopTimeoutMs] 10 s
 * @property {number} [logoutTimeoutMs] 10 s
 * @property {number} [qrTtlMs] 60 s
 * @property {number} [pairingCodeTtlMs] 3 min
 * @property {number} [idempotencyTtlMs] 24 h
 * @property {number} [echoHoldMs] 30 s
 * @property {number} [mediaTtlMs] 7 days
 * @property {number} [deadLetterTtlMs] how long events dashd refused for good are kept (7 days)
 * @property {number} [shutdownTimeoutMs] bound on waiting for requests under way at close (10 s)
 * @property {number} [lidFlushDelayMs] 200 ms
 */

/**
 * @typedef {object} BridgeOptions
 * @property {string} library `baileys`, `venom`, `wwebjs` (the path of dashd's webhook)
 * @property {import('./sessions.js').DriverFactory} driverFactory
 * @property {number} [port] 0 picks a free port
 * @property {string} [host] 127.0.0.1
 * @property {string} token bearer token of the API and HMAC key of the events
 * @property {string} dataDir sessions, credentials, queued events, LID map, media
 * @property {string} [dashdUrl] http://127.0.0.1:3009
 * @property {number} [maxSessions] 10
 * @property {import('./log.js').Logger} [log]
 * @property {string} [version] the library's version, for /health
 * @property {string} [publicUrl] the bridge's root URL as dashd reaches it (media links); default its listening address
 * @property {string} [chromiumPath] for browser drivers
 * @property {number} [reconnectMaxAttempts] 0: reconnect for ever
 * @property {number} [maxBodyBytes] 1 MiB: the body limit of every route but /send-media
 * @property {number} [maxUploadBytes] 16 MiB: the body limit of /send-media (uploads in `data`)
 * @property {BridgeTimings} [timings]
 * @property {() => number} [now] the clock (ms), for tests
 */

/**
 * Creates a bridge; nothing runs until `listen()`.
 * @param {BridgeOptions} options
 */
export function createBridge(options) {
  const library = options.library;
  if (typeof library !== 'string' || !/^[a-z0-9_-]+$/.test(library)) throw new Error('createBridge: library must be a lowercase name');
  if (typeof options.driverFactory !== 'function') throw new Error('createBridge: driverFactory must be a function');
  if (typeof options.token !== 'string' || options.token.length === 0) throw new Error('createBridge: a token is required');
  if (typeof options.dataDir !== 'string' || options.dataDir.length === 0) throw new Error('createBridge: dataDir is required');

  const host = options.host ?? '127.0.0.1';
  const dataDir = options.dataDir;
  const log = options.log ?? createLogger();
  const now = options.now ?? Date.now;
  const timings = options.timings ?? {};
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  const maxUploadBytes = options.maxUploadBytes ?? 16 * 1024 * 1024;
  const expectedToken = digest(options.token);

  const events = new EventQueue({
    dataDir,
    dashdUrl: options.dashdUrl ?? 'http://127.0.0.1:3009',
    library,
    token: options.token,
    log,
    now,
    timings: {
      retryMinMs: timings.eventRetryMinMs,
      retryMaxMs: timings.eventRetryMaxMs,
      requestTimeoutMs: timings.eventRequestTimeoutMs,
      deadTtlMs: timings.deadLetterTtlMs,
    },
  });
  const lids = new LidMap({ dataDir, log, flushDelayMs: timings.lidFlushDelayMs });
  const idempotency = new IdempotencyStore({ dataDir, ttlMs: timings.idempotencyTtlMs, now, log });
  const media = new MediaStore({ dataDir, ttlMs: timings.mediaTtlMs, log, now });
  const echoes = new EchoFilter({ holdMs: timings.echoHoldMs, now });

  /** Per-session order of everything posted: events are queued in the order they happened. */
  /** @type {Map<string, SerialQueue>} */
  const order = new Map();
  /**
   * @param {string} session
   * @param {() => Promise<void> | void} job
   */
  const inOrder = (session, job) => {
    let queue = order.get(session);
    if (!queue) {
      queue = new SerialQueue();
      order.set(session, queue);
    }
    queue.run(async () => job()).catch((err) => log.error('event could not be queued', { session, error: err }));
  };
  /**
   * @param {string} session
   * @param {string} event
   * @param {unknown} data
   */
  const post = (session, event, data) => inOrder(session, () => void events.enqueue(session, event, data));

  /**
   * Records that `lid` and `phone` are one user; a pair the map did not hold (new, or a
   * changed number) is posted to dashd as a `lid_mapping` event, which merges the two
   * identifiers into one contact. A pair already known posts nothing.
   * @param {string} session
   * @param {unknown} lid
   * @param {unknown} phone
   * @returns {{lid: string, phone: string} | null} the pair to post, when it is new or changed
   */
  const learnLid = (session, lid, phone) => {
    if (!lids.learn(lid, phone)) return null;
    const pair = { lid: /** @type {string} */ (lidJid(lid)), phone: /** @type {string} */ (e164(phone)) };
    log.debug('LID mapping learned', { session, lid: pair.lid });
    return pair;
  };

  const sessions = new SessionManager({
    library,
    driverFactory: options.driverFactory,
    dataDir,
    maxSessions: options.maxSessions ?? 10,
    reconnectMaxAttempts: options.reconnectMaxAttempts ?? 0,
    chromiumPath: options.chromiumPath,
    log,
    now,
    timings: definedOnly({
      reconnectMinMs: timings.reconnectMinMs,
      reconnectMaxMs: timings.reconnectMaxMs,
      startTimeoutMs: timings.startTimeoutMs,
      stopTimeoutMs: timings.stopTimeoutMs,
      logoutTimeoutMs: timings.logoutTimeoutMs,
      qrTtlMs: timings.qrTtlMs,
      pairingCodeTtlMs: timings.pairingCodeTtlMs,
    }),
    onEvent: post,
    onDriverData: (session, type, data) => {
      if (type === 'lid_mapping') {
        const pair = learnLid(session, data.lid, data.phone);
        if (pair) post(session, 'lid_mapping', pair);
        else log.debug('LID mapping known or unusable', { session });
        return;
      }
      if (type === 'ack') {
        const ack = normaliseAck(data, now());
        if ('skip' in ack) log.debug('ack not posted', { session, why: ack.skip });
        else post(session, 'ack', ack.data);
        return;
      }
      inOrder(session, () => inbound(session, data));
    },
  });

  /**
   * A driver's message: normalised, its contact's phone and LID completed from the map,
   * its media stored, echoes of our own sends dropped, then queued.
   * @param {string} session
   * @param {Record<string, any>} raw
   */
  async function inbound(session, raw) {
    const normalised = normaliseMessage(raw, now());
    if ('skip' in normalised) {
      log.debug('message not posted', { session, why: normalised.skip });
      return;
    }
    const message = normalised.data;
    const chatLid = lidJid(message.chat_id);
    const chatPhone = e164(message.chat_id);
    const learned = [
      message.lid && message.phone ? learnLid(session, message.lid, message.phone) : null,
      chatLid && message.phone ? learnLid(session, chatLid, message.phone) : null,
      chatPhone && message.lid ? learnLid(session, message.lid, chatPhone) : null,
    ];
    // Before the message, in this session's order: dashd merges the contact first.
    for (const pair of learned) if (pair) void events.enqueue(session, 'lid_mapping', pair);
    if (chatLid && !message.phone) message.phone = lids.phoneOf(chatLid);
    if (chatPhone && !message.lid) message.lid = lids.lidOf(chatPhone);
    if (normalised.mediaBytes && message.media) {
      try {
        message.media.url = (await media.save(session, normalised.mediaBytes)).url;
      } catch (err) {
        log.error('media of a message could not be stored; posted without its URL', { session, message_id: message.message_id, error: err });
      }
    }
    if (!message.from_me) {
      void events.enqueue(session, 'message', message);
      return;
    }
    const fate = echoes.offer(session, message, (held) => post(session, 'message', held));
    if (fate === 'posted') return;
    log.debug(fate === 'echo' ? 'echo of our own send not posted' : 'phone message held while sends are under way', { session, message_id: message.message_id });
  }

  // ----- HTTP -----

  /** @type {http.Server | null} */
  let server = null;
  let startedAt = now();
  let baseUrl = '';
  /** @type {Promise<void> | null} */
  let closing = null;
  let inFlight = 0;
  /** @type {(() => void) | null} */
  let onIdle = null;
  /** @type {NodeJS.Timeout | null} */
  let sweepTimer = null;
  /** @type {(value?: unknown) => void} */
  let markReady = () => {};
  /** Requests wait for the restored sessions to be known before they are routed. */
  const ready = new Promise((resolve) => {
    markReady = resolve;
  });

  /** @param {string | undefined} header */
  function authorized(header) {
    const match = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    // Compare digests: equal lengths whatever was sent, and constant time.
    return timingSafeEqual(digest(match ? match[1] : ''), expectedToken) && match !== null;
  }

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  async function handle(req, res) {
    inFlight += 1;
    try {
      if (!authorized(req.headers.authorization)) throw new BridgeError('unauthorized', 'missing or wrong bearer token');
      await ready;
      await route(req, res);
    } catch (err) {
      const error = toBridgeError(err);
      if (error.status >= 500) log.error('request failed', { method: req.method, path: pathOf(req), error: err });
      else log.debug('request refused', { method: req.method, path: pathOf(req), code: error.code });
      if (!res.headersSent) {
        if (!req.complete) res.setHeader('connection', 'close'); // the body is left unread
        if (error.code === 'method_not_allowed' && /** @type {any} */ (error).allow) res.setHeader('allow', /** @type {any} */ (error).allow);
        sendJson(res, error.status, { error: { code: error.code, message: error.message } });
      } else {
        res.destroy();
      }
    } finally {
      inFlight -= 1;
      if (inFlight === 0 && onIdle) onIdle();
    }
  }

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  async function route(req, res) {
    const url = new URL(req.url ?? '/', 'http://bridge');
    const segments = url.pathname.split('/').slice(1).map(decodeSegment);
    const method = req.method ?? 'GET';
    const [first, second, third] = segments;
    /**
     * @param {string} allowed
     * @param {() => Promise<void>} handler
     */
    const only = async (allowed, handler) => {
      if (method !== allowed) {
        const error = new BridgeError('method_not_allowed', `${method} is not allowed here; use ${allowed}`);
        Object.assign(error, { allow: allowed });
        throw error;
      }
      await handler();
    };

    if (segments.length === 3 && first === 'sessions' && (third === 'start' || third === 'restart')) {
      return only('POST', async () => {
        const pairingPhone = pairingPhoneOf(await readJson(req, maxBodyBytes));
        const status = third === 'start' ? await sessions.start(second, { pairingPhone }) : await sessions.restart(second, { pairingPhone });
        sendJson(res, 200, status);
      });
    }
    if (segments.length === 2 && first === 'qr') {
      return only('GET', async () => {
        const qr = sessions.qr(second);
        if (!qr) throw new BridgeError('qr_not_available', `no QR waits to be scanned for session ${second} (${sessions.status(second).state})`);
        sendJson(res, 200, qr);
      });
    }
    if (segments.length === 2 && first === 'status') {
      return only('GET', async () => sendJson(res, 200, sessions.status(second)));
    }
    if (segments.length === 2 && first === 'session') {
      return only('DELETE', async () => {
        await sessions.remove(second);
        sendJson(res, 200, {});
      });
    }
    if (segments.length === 1 && first === 'sessions') {
      return only('GET', async () => sendJson(res, 200, { sessions: sessions.list() }));
    }
    if (segments.length === 1 && first === 'health') {
      return only('GET', async () => sendJson(res, 200, health()));
    }
    if (segments.length === 1 && (first === 'send' || first === 'send-media')) {
      return only('POST', async () => {
        const isMedia = first === 'send-media';
        const body = await readJson(req, isMedia ? maxUploadBytes : maxBodyBytes);
        sendJson(res, 200, await send(body, isMedia));
      });
    }
    if (segments.length === 3 && first === 'media') {
      return only('GET', async () => serveMedia(res, second, third));
    }
    throw new BridgeError('not_found', `no route ${method} ${url.pathname} (bridge contract version ${CONTRACT_VERSION})`);
  }

  /**
   * POST /send and /send-media.
   * @param {Record<string, any>} body
   * @param {boolean} isMedia
   */
  async function send(body, isMedia) {
    const session = body.session;
    if (typeof session !== 'string' || !SESSION_NAME.test(session)) {
      throw new BridgeError('invalid_request', 'session must be a session name (1 to 64 letters, digits, - or _)');
    }
    if (body.buttons !== undefined || body.list !== undefined) {
      throw new BridgeError('unsupported', 'buttons and lists are reserved in contract version 1; send menus as numbered text');
    }
    const recipient = parseRecipient(body.to);
    if (!recipient) {
      throw new BridgeError('invalid_recipient', 'to must be a phone number with country code, digits only (15551234567), or a LID JID (12345678901234@lid)');
    }
    const to = recipient.kind === 'phone' ? recipient.digits : recipient.jid;
    const key = optionalText(body, 'idempotency_key', 256);

    /** @type {() => Promise<string>} */
    let deliver;
    if (!isMedia) {
      if (typeof body.text !== 'string' || body.text.trim() === '') throw new BridgeError('invalid_request', 'text must be a non-empty string');
      if (body.text.length > MAX_TEXT_CHARS) throw new BridgeError('invalid_request', `text is longer than ${MAX_TEXT_CHARS} characters`);
      const message = { to, text: body.text, replyTo: optionalText(body, 'reply_to', 512) };
      deliver = () => sessions.send(session, message);
    } else {
      if (!MEDIA_KINDS.has(body.kind)) throw new BridgeError('invalid_request', 'kind must be image, video, audio or document');
      const { url, data } = mediaSource(body);
      const mimeType = optionalText(body, 'mime_type', 255);
      if (data && !mimeType) throw new BridgeError('invalid_request', 'mime_type is required with data');
      if (mimeType && !MIME_TYPE.test(mimeType)) throw new BridgeError('invalid_request', 'mime_type must be a MIME type (image/png)');
      const message = {
        to,
        kind: body.kind,
        url,
        data,
        caption: optionalText(body, 'caption', MAX_TEXT_CHARS),
        filename: optionalText(body, 'filename', 255),
        mimeType,
      };
      deliver = () => sessions.sendMedia(session, message);
    }
    const { id, repeated } = await idempotency.run(session, key, async () => {
      echoes.begin(session);
      /** @type {string | null} */
      let id = null;
      try {
        id = await deliver();
        return id;
      } finally {
        echoes.end(session, id);
      }
    });
    log.debug(repeated ? 'repeated idempotency key answered with the first id' : 'message sent', { session, id });
    return { id };
  }

  /**
   * GET /media/{session}/{id}.
   * @param {http.ServerResponse} res
   * @param {string} session
   * @param {string} id
   */
  async function serveMedia(res, session, id) {
    const stored = SESSION_NAME.test(session) ? await media.open(session, id) : null;
    if (!stored) throw new BridgeError('media_not_found', `no media ${id} of session ${session} (expired or never stored)`);
    /** @type {Record<string, string | number>} */
    const headers = { 'content-type': stored.mimeType, 'content-length': stored.size, 'cache-control': 'private, max-age=3600' };
    if (stored.filename) headers['content-disposition'] = `attachment; filename*=UTF-8''${encodeURIComponent(stored.filename)}`;
    await new Promise((resolve, reject) => {
      const stream = createReadStream(stored.file);
      stream.once('open', () => {
        res.writeHead(200, headers);
        stream.pipe(res);
      });
      stream.once('error', reject);
      res.once('finish', resolve);
      res.once('close', resolve);
    });
  }

  function health() {
    const memory = process.memoryUsage();
    const byState = sessions.countsByState();
    return {
      ok: closing === null,
      library,
      version: options.version ?? 'unknown',
      contract: CONTRACT_VERSION,
      uptime_s: Math.floor((now() - startedAt) / 1000),
      memory: { rss_bytes: memory.rss, heap_used_bytes: memory.heapUsed },
      sessions: {
        total: Object.values(byState).reduce((a, b) => a + b, 0),
        max: options.maxSessions ?? 10,
        by_state: byState,
      },
      events: { pending: events.pending(), by_session: events.pendingBySession(), dead: events.dead() },
    };
  }

  /**
   * Loads what the last run left (undelivered events, LID map, idempotency keys,
   * sessions), starts listening and restarts the sessions.
   * @returns {Promise<{url: string, host: string, port: number}>}
   */
  async function listen() {
    if (server) throw new Error('the bridge listens already');
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await lids.load();
    await idempotency.load();
    await events.open();
    server = http.createServer((req, res) => void handle(req, res));
    server.requestTimeout = 60000;
    server.headersTimeout = 20000;
    server.keepAliveTimeout = 5000;
    const listening = /** @type {http.Server} */ (server);
    await new Promise((resolve, reject) => {
      listening.once('error', reject);
      listening.listen(options.port ?? 0, host, () => {
        listening.off('error', reject);
        resolve(undefined);
      });
    });
    const address = /** @type {import('node:net').AddressInfo} */ (listening.address());
    baseUrl = `http://${urlHost(host)}:${address.port}`;
    media.setBaseUrl(options.publicUrl ?? baseUrl);
    startedAt = now();
    events.start();
    try {
      await sessions.restore();
    } finally {
      markReady();
    }
    await sweep();
    sweepTimer = setInterval(() => void sweep(), 60 * 60 * 1000);
    sweepTimer.unref();
    log.info('bridge listening', { library, url: baseUrl, data_dir: dataDir, dashd: events.url, sessions: sessions.list().length });
    return { url: baseUrl, host, port: address.port };
  }

  /** Deletes expired media and dead letters (hourly). */
  async function sweep() {
    await media.sweep().catch((err) => log.error('media sweep failed', { error: err }));
    await events.sweepDead().catch((err) => log.error('dead letter sweep failed', { error: err }));
  }

  /**
   * Clean shutdown: stop accepting, let requests under way finish (bounded), stop the
   * drivers (sessions stay paired and listed, to resume at the next start), write what
   * is pending and stop delivering (undelivered events stay on disk).
   */
  function close() {
    if (closing) return closing;
    closing = (async () => {
      log.info('bridge shutting down', { library });
      if (sweepTimer) clearInterval(sweepTimer);
      const listening = server;
      if (listening) {
        const closed = new Promise((resolve) => listening.close(() => resolve(undefined)));
        listening.closeIdleConnections();
        if (inFlight > 0) {
          await new Promise((resolve) => {
            const timer = setTimeout(resolve, timings.shutdownTimeoutMs ?? 10000);
            onIdle = () => {
              clearTimeout(timer);
              resolve(undefined);
            };
          });
        }
        listening.closeAllConnections();
        await closed;
      }
      markReady();
      await sessions.close();
      echoes.flush();
      await Promise.all([...order.values()].map((queue) => queue.idle()));
      await events.close();
      await lids.flush();
      await idempotency.flush();
      log.info('bridge stopped', { library, undelivered_events: events.pending() });
    })();
    return closing;
  }

  return {
    listen,
    close,
    /** The bridge's root URL once listening. */
    get url() {
      return baseUrl;
    },
    /** For drivers' tests and tools: the parts of the bridge. */
    sessions,
    events,
    lids,
    media,
  };
}

/** @param {string} text */
function digest(text) {
  return createHash('sha256').update(text, 'utf8').digest();
}

/**
 * @param {http.ServerResponse} res
 * @param {number} status
 * @param {unknown} body
 */
function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

/**
 * The request's JSON object body ({} when empty), at most `limit` bytes.
 * @param {http.IncomingMessage} req
 * @param {number} limit
 * @returns {Promise<Record<string, any>>}
 */
async function readJson(req, limit) {
  const tooLarge = () => new BridgeError('payload_too_large', `the body exceeds ${limit} bytes`);
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();
  /** @type {Buffer[]} */
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new BridgeError('invalid_request', 'the body is not JSON');
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new BridgeError('invalid_request', 'the body must be a JSON object');
  return body;
}

/**
 * The pairing phone of a start or restart body (digits), or null.
 * @param {Record<string, any>} body
 */
function pairingPhoneOf(body) {
  if (body.pairing_phone === undefined || body.pairing_phone === null) return null;
  const recipient = parseRecipient(body.pairing_phone);
  if (!recipient || recipient.kind !== 'phone') throw new BridgeError('invalid_request', 'pairing_phone must be the phone number with country code');
  return recipient.digits;
}

/**
 * Where the media of /send-media comes from: exactly one of `url` (the driver downloads
 * it) and `data` (the file itself, base64).
 * @param {Record<string, any>} body
 * @returns {{url: string, data: null} | {url: null, data: Buffer}}
 */
function mediaSource(body) {
  const hasUrl = body.url !== undefined && body.url !== null;
  const hasData = body.data !== undefined && body.data !== null;
  if (hasUrl === hasData) throw new BridgeError('invalid_request', 'give exactly one of url (a link to the file) and data (the file, base64)');
  if (hasUrl) {
    if (typeof body.url !== 'string' || !isHttpUrl(body.url)) throw new BridgeError('invalid_request', 'url must be an http:// or https:// URL');
    return { url: body.url, data: null };
  }
  return { url: null, data: decodeBase64(body.data) };
}

/**
 * The bytes of base64 text (standard or URL-safe alphabet, padding optional, line breaks
 * ignored); invalid_request for anything else or an empty file.
 * @param {unknown} value
 */
function decodeBase64(value) {
  if (typeof value !== 'string') throw new BridgeError('invalid_request', 'data must be the file in base64 (a string)');
  const text = value.replace(/[\r\n]/g, '');
  const padded = text.endsWith('=');
  if (!BASE64.test(text) || text.length % 4 === 1 || (padded && text.length % 4 !== 0)) {
    throw new BridgeError('invalid_request', 'data is not base64 (standard or URL-safe alphabet)');
  }
  const bytes = Buffer.from(text, 'base64'); // Node's base64 decoder reads both alphabets
  if (bytes.length === 0) throw new BridgeError('invalid_request', 'data holds an empty file');
  return bytes;
}

/** @param {string} segment */
function decodeSegment(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new BridgeError('invalid_request', 'the path is not valid percent-encoding');
  }
}

/**
 * An optional string field: null when absent or null, else a string of at most `max` characters.
 * @param {Record<string, any>} body
 * @param {string} name
 * @param {number} max
 */
function optionalText(body, name, max) {
  const value = body[name];
  if (value === undefined || value === null || value === '') return null;
  if (typeof value !== 'string') throw new BridgeError('invalid_request', `${name} must be a string`);
  if (value.length > max) throw new BridgeError('invalid_request', `${name} is longer than ${max} characters`);
  return value;
}

/** @param {string} value */
function isHttpUrl(value) {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}

/** @param {string} host */
function urlHost(host) {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

/** @param {http.IncomingMessage} req */
function pathOf(req) {
  return (req.url ?? '/').split('?')[0];
}

/**
 * @template {Record<string, unknown>} T
 * @param {T} object
 * @returns {Partial<T>}
 */
function definedOnly(object) {
  return /** @type {Partial<T>} */ (Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined)));
}
