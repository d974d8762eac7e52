// The venom-bot driver of the DashOffice bridge (docs/bridges.md, "Driver interface"): one
// WhatsApp Web session in a headless Chromium driven by venom-bot, with the browser profile
// (venom's token folder) in the session's own directory. The pure mapping functions
// (statusFind states, messages, acks, JIDs, options) are exported for the tests.
//
// The driver launches Chromium itself (puppeteer-core, the version venom already depends on)
// and hands venom its DevTools endpoint (`browserWS`): venom leaves a browser it launched
// running when WhatsApp Web cannot be opened, and keeps no handle a caller could close
// before it has logged in. Owning the browser, `stop()` always releases it.

import { constants as fsConstants } from 'node:fs';
import { access, chmod, mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import venom from 'venom-bot';
import { BridgeError, downloadMedia, lidJid, mediaKindOfType, phoneDigits, recipientJid, splitJid } from '@dashoffice/bridge-common';

/** Debian's Chromium, the browser used when the bridge names none (CHROMIUM_PATH). */
export const DEFAULT_CHROMIUM = '/usr/bin/chromium';

/** venom's token folder inside the session's dataDir: the Chrome profile is `<dataDir>/tokens/<session>`. */
export const TOKEN_FOLDER = 'tokens';

/** How long a send may take before it answers 500 (venom's senders can hang on a closed page). */
const SEND_TIMEOUT_MS = 60_000;

/** How long a received media may take to download and decrypt. */
const MEDIA_TIMEOUT_MS = 60_000;

/**
 * Every venom `statusFind` value (and the `chatsAvailable` interface change) as a contract
 * state, as the table of docs/bridges.md says; values it does not list are placed by what
 * they mean. `null`: progress information only.
 * @type {Readonly<Record<string, 'initializing' | 'qr' | 'authenticated' | 'ready' | 'disconnected' | 'logged_out' | 'failed' | null>>}
 */
export const STATE_OF_STATUS = Object.freeze({
  initBrowser: 'initializing',
  openBrowser: 'initializing',
  connectBrowserWs: 'initializing',
  initWhatsapp: 'initializing',
  successPageWhatsapp: 'initializing',
  waitForLogin: 'initializing', // sent once the login wait is over; never a step back
  notLogged: 'qr',
  qrReadSuccess: 'authenticated',
  isLogged: 'authenticated',
  waitChat: 'authenticated', // logged in, waiting for the chat list
  successChat: 'ready',
  chatsAvailable: 'ready',
  browserClose: 'disconnected',
  desconnectedMobile: 'disconnected',
  serverClose: 'disconnected',
  desconnected: 'disconnected',
  phoneNotConnected: 'disconnected',
  serverWssNotConnected: 'disconnected',
  deleteToken: 'logged_out',
  qrReadFail: 'failed',
  autocloseCalled: 'failed',
  erroPageWhatsapp: 'disconnected', // the page did not load: usually the network, retried with backoff
  noOpenBrowser: 'failed',
  deviceNotConnected: null, // the phone is slow to answer while syncing; venom goes on waiting
  introductionHistory: null, // the loading screen's text
});

/**
 * The contract state of a venom `statusFind` value, or null for progress information and
 * values venom may add later.
 * @param {unknown} status
 */
export function stateOfStatus(status) {
  return typeof status === 'string' && Object.hasOwn(STATE_OF_STATUS, status) ? STATE_OF_STATUS[status] : null;
}

/**
 * The contract state of a WhatsApp Web socket state (venom's `onStateChange`), or null.
 * `UNPAIRED` once the session had logged in means the phone removed the device.
 * @param {unknown} state
 * @param {boolean} paired whether the session had logged in
 * @returns {'logged_out' | 'disconnected' | 'failed' | null}
 */
export function stateOfSocketState(state, paired) {
  if ((state === 'UNPAIRED' || state === 'UNPAIRED_IDLE') && paired) return 'logged_out';
  if (state === 'CONFLICT') return 'disconnected'; // WhatsApp Web was opened elsewhere
  if (state === 'TOS_BLOCK' || state === 'SMB_TOS_BLOCK' || state === 'DEPRECATED_VERSION' || state === 'PROXYBLOCK') return 'failed';
  return null;
}

/**
 * The operator's reason of a venom status, with what the driver learnt about it (the
 * navigation error of the WhatsApp Web page, the rejection text).
 * @param {string} status
 * @param {string | null} [detail]
 */
export function reasonOf(status, detail) {
  return detail ? `${status}: ${detail}` : status;
}

/**
 * A JID as text: venom gives strings, WhatsApp Web's Wid objects (`{_serialized}` or
 * `{user, server}`) where it passes a model through.
 * @param {unknown} value
 */
export function jidText(value) {
  if (typeof value === 'string') return value.trim() || null;
  if (value && typeof value === 'object') {
    const wid = /** @type {Record<string, unknown>} */ (value);
    if (typeof wid._serialized === 'string' && wid._serialized) return wid._serialized;
    if (typeof wid.user === 'string' && typeof wid.server === 'string') return `${wid.user}@${wid.server}`;
  }
  return null;
}

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

/** WhatsApp Web message types that carry nothing to post (notices, key changes, placeholders). */
const SILENT_TYPES = new Set([
  'e2e_notification',
  'notification',
  'notification_template',
  'gp2',
  'protocol',
  'ciphertext',
  'revoked',
  'reaction',
  'call_log',
  'broadcast_notification',
]);

/**
 * A venom message (`onMessage`, `onAnyMessage`) as the driver's `message` data
 * (docs/bridges.md), or null when it carries nothing to post.
 * @param {any} m
 */
export function normaliseVenomMessage(m) {
  if (!m || typeof m !== 'object') return null;
  const messageId = jidText(m.id);
  const fromMe = m.fromMe === true || m.id?.fromMe === true;
  const chatId = jidText(m.chatId) ?? jidText(fromMe ? m.to : m.from);
  if (!messageId || !chatId) return null;
  const type = typeof m.type === 'string' && m.type ? m.type : 'unknown';
  if (SILENT_TYPES.has(type) || (m.isNotification === true && type !== 'chat')) return null;

  const hasMedia = m.isMedia === true || m.isMMS === true;
  const kind = hasMedia ? (mediaKindOfType(type) ?? 'document') : null;
  const caption = typeof m.caption === 'string' && m.caption ? m.caption : null;
  // WhatsApp Web keeps a media's (and a location's) thumbnail in `body`: their text is the caption.
  const body = typeof m.body === 'string' ? m.body : typeof m.content === 'string' ? m.content : '';
  const text = hasMedia || type === 'location' ? (caption ?? '') : body;

  const chat = splitJid(chatId);
  const isGroup = m.isGroupMsg === true || chat?.server === 'g.us';
  // venom 5.3.0 knows nothing of LIDs: a phone is taken only where WhatsApp Web put one.
  const phone = chat?.server === 'lid' ? phoneOfLidMessage(m) : null;

  return {
    message_id: messageId,
    chat_id: chatId,
    sender_id: jidText(m.author) ?? jidText(m.sender?.id) ?? jidText(fromMe ? null : m.from) ?? chatId,
    phone,
    lid: null,
    from_me: fromMe,
    timestamp_s: seconds(m.t) ?? seconds(m.timestamp),
    type,
    text,
    has_media: hasMedia,
    media: kind
      ? {
          kind,
          mime_type: typeof m.mimetype === 'string' && m.mimetype ? m.mimetype : null,
          caption,
          filename: typeof m.filename === 'string' && m.filename ? m.filename : null,
        }
      : null,
    reply_id: textOrNull(m.selectedButtonId) ?? textOrNull(m.listResponse?.singleSelectReply?.selectedRowId) ?? textOrNull(m.selectedRowId),
    location: locationOf(m),
    push_name: textOrNull(m.notifyName) ?? textOrNull(m.sender?.pushname),
    is_group: isGroup,
  };
}

/**
 * The phone of a message in a `@lid` chat, where WhatsApp Web gives one: the contact's
 * `phoneNumber`, or a phone JID as sender or author.
 * @param {any} m
 */
function phoneOfLidMessage(m) {
  const candidates = [m.sender?.phoneNumber, m.chat?.contact?.phoneNumber, m.author, m.sender?.id, m.fromMe ? m.to : m.from];
  for (const candidate of candidates) {
    const digits = phoneDigits(jidText(candidate));
    if (digits) return digits;
  }
  return null;
}

/**
 * The `lid_mapping` a normalised message teaches, or null.
 * @param {{chat_id: string, phone: string | null}} data
 */
export function lidMappingOf(data) {
  const lid = lidJid(data?.chat_id);
  const phone = phoneDigits(data?.phone);
  return lid && phone ? { lid, phone } : null;
}

/** @param {any} m */
function locationOf(m) {
  if (m.type !== 'location' && m.lat === undefined) return null;
  const latitude = Number(m.lat);
  const longitude = Number(m.lng);
  if (m.lat === undefined || m.lng === undefined || !Number.isFinite(latitude) || !Number.isFinite(longitude)) return null;
  // `loc` is "name\naddress" when the sender picked a place.
  const [name, ...address] = typeof m.loc === 'string' ? m.loc.split('\n') : [];
  return { latitude, longitude, name: textOrNull(name), address: textOrNull(address.join(', ')) };
}

/** venom's AckType below -1 (WhatsApp Web's failure kinds), for the error of a failed ack. */
const FAILED_ACKS = new Map([
  [-1, 'FAILED'],
  [-2, 'EXPIRED'],
  [-3, 'CONTENT_GONE'],
  [-4, 'CONTENT_TOO_BIG'],
  [-5, 'CONTENT_UNUPLOADABLE'],
  [-6, 'INACTIVE'],
  [-7, 'MD_DOWNGRADE'],
]);

/**
 * A venom `onAck` payload (a WhatsApp Web message with `id: {fromMe, remote, id, _serialized}`
 * and `ack`) as the driver's `ack` data, or null when it is no ack of one of our messages.
 * venom's AckType is whatsapp-web.js's numbering (-1 failed, 0 pending, 1 sent, 2 delivered,
 * 3 read, 4 played) plus failure kinds from -2 to -7, reported as -1 with their name.
 * @param {any} payload
 */
export function ackOf(payload) {
  const key = payload?.id;
  const id = jidText(key);
  const ack = payload?.ack;
  if (!id || typeof ack !== 'number' || !Number.isInteger(ack)) return null;
  const fromMe = typeof key === 'object' && key !== null ? key.fromMe === true : id.startsWith('true_');
  if (!fromMe) return null; // receipts of received messages (our own reads)
  if (ack > 4) return null;
  /** @type {{id: string, ack: number, chat_id?: string, error?: {code: string, message: string}}} */
  const data = { id, ack: ack < -1 ? -1 : ack };
  const chatId = jidText(key?.remote) ?? jidText(payload.to);
  if (chatId) data.chat_id = chatId;
  if (ack < 0) {
    const name = FAILED_ACKS.get(ack) ?? `ACK_${ack}`;
    data.error = { code: name.toLowerCase(), message: `WhatsApp Web reported ${name} (ack ${ack})` };
  }
  return data;
}

/**
 * The paired phone's digits from venom's host device (`getHostDevice()`: `{id: Wid, ...}`)
 * or a wid, or null.
 * @param {any} host
 */
export function phoneOfHost(host) {
  const candidates = [host?.id, host?.wid, host?.me, host];
  for (const candidate of candidates) {
    const digits = phoneDigits(jidText(candidate));
    if (digits) return digits;
  }
  return null;
}

/**
 * The id of the message a venom sender (`sendText`, `reply`, `sendFileFromBase64`...) sent:
 * its answer's `to` is the new message's key (`{_serialized: 'true_<chat>_<id>', ...}`).
 * @param {any} result
 */
export function sentMessageId(result) {
  for (const candidate of [result?.to, result?.id]) {
    const id = jidText(candidate);
    if (id && /^(true|false)_/.test(id)) return id;
  }
  return null;
}

/**
 * A venom sender's failure (it rejects with `{erro: true, status, text}` objects, or errors)
 * as the BridgeError the bridge answers.
 * @param {unknown} err
 */
export function sendErrorOf(err) {
  if (err instanceof BridgeError) return err;
  const failure = /** @type {any} */ (err);
  const text =
    (typeof failure?.text === 'string' && failure.text) ||
    (typeof failure?.message === 'string' && failure.message) ||
    (typeof err === 'string' && err) ||
    'venom did not send the message';
  if (/does not exist|necessary to number|Error to number/i.test(text) && !/^The id /.test(text)) {
    return new BridgeError('invalid_recipient', text, { cause: err });
  }
  if (/rate|too many|429/i.test(text)) return new BridgeError('rate_limited', text, { cause: err });
  return new BridgeError('internal', text, { cause: err });
}

/**
 * Whether a `reply` failed only because the quoted message is unknown (the driver then
 * sends the text without quoting).
 * @param {unknown} err
 */
export function isUnknownQuote(err) {
  const text = /** @type {any} */ (err)?.text;
  return typeof text === 'string' && /^The id .* does not exist/.test(text);
}

/** A MIME type venom's data-URL check accepts (`type/subtype` of letters, digits, `-.+`). */
const VENOM_MIME = /^[a-zA-Z0-9]+\/[a-zA-Z0-9-.+]+$/;

/**
 * How `sendMedia` sends a downloaded file: `{method: 'image' | 'file', dataUrl, filename,
 * caption}`. venom takes base64 data URLs and needs string captions and file names; a
 * MIME type it cannot parse would leave its promise unsettled, so it becomes
 * `application/octet-stream`.
 * @param {{kind: string, caption: string | null, filename: string | null, mimeType: string | null}} message
 * @param {{data: Buffer, mimeType: string | null, filename: string | null}} download
 */
export function mediaPayload(message, download) {
  const { kind } = message;
  if (!['image', 'video', 'audio', 'document'].includes(kind)) throw new BridgeError('invalid_request', `unknown media kind ${JSON.stringify(kind)}`);
  const declared = [message.mimeType, download.mimeType].map((m) => (typeof m === 'string' ? m.split(';')[0].trim().toLowerCase() : '')).find((m) => m);
  const mimeType = declared && VENOM_MIME.test(declared) ? declared : 'application/octet-stream';
  const filename = message.filename || download.filename || kind;
  const dataUrl = `data:${mimeType};base64,${Buffer.from(download.data).toString('base64')}`;
  const caption = kind === 'audio' ? '' : (message.caption ?? '');
  return { method: kind === 'image' && mimeType.startsWith('image/') ? 'image' : 'file', dataUrl, filename, caption, mimeType };
}

/**
 * Chromium's command line for a session: headless, without the setuid sandbox when the
 * bridge runs as root (Chromium refuses to start otherwise), no GPU, no shared-memory
 * assumptions (containers have a small /dev/shm).
 * @param {{root?: boolean}} [options]
 */
export function chromiumArgs(options = {}) {
  const args = [
    '--disable-dev-shm-usage',
    '--disable-gpu',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-extensions',
    '--disable-sync',
    '--disable-background-networking',
    '--disable-component-update',
    '--mute-audio',
    '--window-size=1280,900',
  ];
  if (options.root) args.unshift('--no-sandbox', '--disable-setuid-sandbox');
  return args;
}

/**
 * Chromium's environment for a session: its crash-report settings in the session's
 * directory instead of `~/.config/chromium`, and no dconf database in `~/.cache`, so a
 * session writes nothing outside its dataDir.
 * @param {Record<string, string | undefined>} env
 * @param {string} dataDir
 */
export function chromiumEnv(env, dataDir) {
  return { ...env, XDG_CONFIG_HOME: join(dataDir, 'chromium-config'), GSETTINGS_BACKEND: 'memory' };
}

/**
 * venom's `create` options for a session (docs/bridges.md: the token folder in dataDir;
 * no auto-close, the bridge restarts a session that shows no QR within 3 minutes; no
 * QR in the terminal, no banners, no spinners).
 * @param {{session: string, dataDir: string, chromiumPath: string, browserWS: string, webVersion?: string | null}} options
 */
export function venomOptions({ session, dataDir, chromiumPath, browserWS, webVersion = null }) {
  return {
    session,
    mkdirFolderToken: dataDir,
    folderNameToken: TOKEN_FOLDER,
    browserWS,
    // venom checks this path even when it connects to a browser, and downloads and installs
    // Google Chrome (curl, sudo dpkg) when it finds none: it must always name a browser.
    browserPathExecutable: chromiumPath,
    headless: 'new',
    autoClose: 0,
    logQR: false,
    disableSpins: true,
    disableWelcome: true,
    updatesLog: false,
    debug: false,
    waitForLogin: true,
    ...(webVersion ? { webVersion } : {}),
  };
}

/**
 * The profile directory venom uses for a session: `<dataDir>/tokens/<session>`.
 * @param {string} dataDir
 * @param {string} session
 */
export function profileDir(dataDir, session) {
  return join(dataDir, TOKEN_FOLDER, session);
}

// ---------------------------------------------------------------------------------------
// venom's process-wide side effects

/** Loggers of the running drivers, by session: venom's progress lines go to their debug log. */
const progressLogs = new Map();
let quieted = false;

/**
 * Turns off what venom does process-wide at every `create()` and no option disables: an
 * update check that runs npm-check-updates against the npm registry and prints a box, and
 * spinners that write to stderr (between the bridge's JSON log lines). The progress texts
 * go to the debug log of the session they name instead. Idempotent.
 */
export function quietVenom() {
  if (quieted) return;
  const require = createRequire(import.meta.url);
  const updates = require('venom-bot/dist/controllers/check-up-to-date.js');
  updates.checkUpdates = async () => undefined;
  const spinners = require('venom-bot/dist/utils/spinnies.js');
  const progress = progressSink();
  spinners.getSpinnies = () => progress;
  quieted = true;
}

/** A stand-in for venom's spinnies: each step's text to the debug log of its session. */
function progressSink() {
  /** @type {Map<string, {text: string, status: string}>} */
  const steps = new Map();
  const record = (/** @type {string} */ status) => (/** @type {string} */ name, /** @type {{text?: string} | undefined} */ options) => {
    const text = typeof options?.text === 'string' ? options.text : (steps.get(name)?.text ?? '');
    steps.set(name, { text, status });
    if (steps.size > 500) steps.delete(steps.keys().next().value);
    const log = logOfStep(name);
    if (log && text && !/^\.+$/.test(text)) log.debug?.(`venom: ${text}`, { step: name, status });
    return steps.get(name);
  };
  return {
    add: record('spinning'),
    update: record('spinning'),
    succeed: record('succeed'),
    fail: record('fail'),
    remove: (/** @type {string} */ name) => steps.delete(name),
    pick: (/** @type {string} */ name) => {
      const step = steps.get(name);
      if (!step) throw new Error(`no step ${name}`);
      return step;
    },
    stopAll: () => undefined,
    checkIfActiveSpinners: () => false,
  };
}

/** The log of the session a venom step names (`browser-<session>`, `session-<session>`...). @param {string} name */
function logOfStep(name) {
  let best = null;
  let length = 0;
  for (const [session, log] of progressLogs) {
    if (name.endsWith(`-${session}`) && session.length > length) {
      best = log;
      length = session.length;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------
// The driver

/**
 * The driver factory of the bridge. Besides the common driver context it takes
 * `webVersion` (VENOM_WEB_VERSION) and, for the tests, `launchBrowser` (puppeteer's
 * `launch`) and `venomCreate` (venom's `create`).
 * @param {import('@dashoffice/bridge-common/src/sessions.js').DriverContext & {
 *   webVersion?: string | null,
 *   launchBrowser?: (options: Record<string, unknown>) => Promise<any>,
 *   venomCreate?: (...args: any[]) => Promise<any>,
 * }} context
 */
export function driverFactory(context) {
  return new VenomDriver(context);
}

export class VenomDriver {
  /** @param {any} context */
  constructor(context) {
    this.context = context;
    this.log = context.log;
    /** @type {import('puppeteer-core').Browser | null} */
    this.browser = null;
    /** @type {any} the venom client, from the moment its page exists */
    this.client = null;
    /** @type {any} */
    this.page = null;
    this.created = false;
    this.stopped = false;
    this.ended = false;
    this.paired = false;
    this.readyEmitted = false;
    /** @type {string | null} why WhatsApp Web's page did not load, when it did not */
    this.navigationError = null;
  }

  /** @param {string} type @param {any} [data] */
  emit(type, data) {
    if (!this.stopped) this.context.emit(type, data);
  }

  async start() {
    const { session, dataDir } = this.context;
    const chromiumPath = this.context.chromiumPath || DEFAULT_CHROMIUM;
    try {
      await access(chromiumPath, fsConstants.X_OK);
    } catch {
      // Never let venom look for a browser itself: it would try to download and install one.
      throw Object.assign(new Error(`no Chromium at ${chromiumPath} (CHROMIUM_PATH); install Debian's chromium`), { fatal: true });
    }
    if (this.context.pairingPhone) {
      this.log?.warn?.('venom-bot 5.3.0 cannot pair by code: showing QR codes instead', { pairing_phone: this.context.pairingPhone });
    }
    quietVenom();
    progressLogs.set(session, this.log);

    const profile = profileDir(dataDir, session);
    await mkdir(profile, { recursive: true, mode: 0o700 });
    const launch = this.context.launchBrowser ?? ((/** @type {any} */ options) => puppeteer.launch(options));
    const browser = await launch({
      executablePath: chromiumPath,
      headless: true,
      userDataDir: profile,
      args: chromiumArgs({ root: process.getuid?.() === 0 }),
      env: chromiumEnv(process.env, dataDir),
      defaultViewport: null,
      // The bridge's own shutdown stops the drivers; puppeteer's SIGINT handler would exit.
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
      protocolTimeout: 120_000,
    });
    this.browser = browser;
    if (this.stopped) {
      await this.#closeBrowser();
      return;
    }
    browser.on('disconnected', () => {
      if (!this.stopped) this.#end('disconnected', 'the browser exited');
    });
    const [page] = await browser.pages().catch(async (err) => {
      await this.#closeBrowser();
      throw err;
    });
    page?.on('requestfailed', (request) => {
      if (request.isNavigationRequest() && request.frame() === page.mainFrame()) {
        this.navigationError = `${request.failure()?.errorText ?? 'failed'} at ${request.url()}`;
      }
    });

    const options = {
      ...venomOptions({ session, dataDir, chromiumPath, browserWS: browser.wsEndpoint(), webVersion: this.context.webVersion ?? null }),
      catchQR: (/** @type {string} */ _png, /** @type {string} */ _ascii, /** @type {number} */ attempt, /** @type {string} */ urlCode) => {
        if (typeof urlCode === 'string' && urlCode) {
          this.log?.debug?.('venom QR', { attempt });
          this.emit('qr', { qr: urlCode });
        }
      },
      statusFind: (/** @type {string} */ status, /** @type {string} */ _session, /** @type {string | undefined} */ info) => this.#onStatus(status, info),
      browserInstance: (/** @type {any} */ _browser, /** @type {any} */ venomPage, /** @type {any} */ client) => this.#attach(client, venomPage),
    };
    const interfaceChange = (/** @type {string} */ change) => {
      if (change === 'chatsAvailable') this.#onStatus(change);
    };
    const create = this.context.venomCreate ?? venom.create;
    create(options, undefined, undefined, undefined, undefined, undefined, interfaceChange).then(
      () => {
        this.created = true;
      },
      (/** @type {unknown} */ err) => {
        const text = err instanceof Error ? err.message : String(err);
        this.log?.debug?.('venom create() rejected', { error: text });
        this.#end('disconnected', reasonOf('venom', this.navigationError ?? text));
      },
    );
  }

  /** A statusFind value (or an interface change) from venom. @param {string} status @param {string} [info] */
  #onStatus(status, info) {
    if (this.stopped) return;
    this.log?.debug?.('venom status', { status, ...(info ? { info } : {}) });
    if (status === 'initWhatsapp') void this.#tightenProfile();
    const state = stateOfStatus(status);
    switch (state) {
      case 'authenticated':
        if (!this.paired) {
          this.paired = true;
          this.emit('authenticated', {});
        }
        return;
      case 'ready':
        // `chatsAvailable` comes before venom has injected its API; `successChat` after.
        if (status === 'successChat' || this.created) void this.#ready();
        return;
      case 'disconnected':
      case 'logged_out':
      case 'failed':
        this.#end(state, reasonOf(status, status === 'erroPageWhatsapp' ? this.navigationError : null));
        return;
      default:
    }
  }

  /** venom makes its token folders world-writable (0777): the credentials are the session's alone. */
  async #tightenProfile() {
    const { dataDir, session } = this.context;
    for (const dir of [join(dataDir, TOKEN_FOLDER), profileDir(dataDir, session)]) {
      await chmod(dir, 0o700).catch(() => undefined);
    }
  }

  /** The venom client exists (its page is open): listen to it. @param {any} client @param {any} page */
  #attach(client, page) {
    this.client = client;
    this.page = page;
    client.onMessage((/** @type {any} */ m) => {
      if (m?.fromMe !== true) void this.#message(m);
    });
    client.onAnyMessage((/** @type {any} */ m) => {
      if (m?.fromMe === true) void this.#message(m);
    });
    client.onAck((/** @type {any} */ payload) => {
      const data = ackOf(payload);
      if (data) this.emit('ack', data);
    });
    client.onStateChange((/** @type {string} */ state) => {
      this.log?.debug?.('WhatsApp Web state', { state });
      const contract = stateOfSocketState(state, this.paired);
      if (contract) this.#end(contract, state);
    });
  }

  async #ready() {
    if (this.readyEmitted || this.stopped) return;
    this.readyEmitted = true;
    let phone = null;
    try {
      phone = phoneOfHost(await withTimeout(this.client?.getHostDevice(), 10_000, 'getHostDevice'));
    } catch (err) {
      this.log?.debug?.('getHostDevice failed', { error: /** @type {Error} */ (err)?.message ?? String(err) });
    }
    if (!phone && this.page) {
      phone = phoneOfHost(
        await this.page
          .evaluate(() => {
            const store = /** @type {any} */ (globalThis).Store;
            return store?.MaybeMeUser?.getMaybeMeUser?.()?._serialized ?? store?.Conn?.wid?._serialized ?? null;
          })
          .catch(() => null),
      );
    }
    this.emit('ready', { phone });
  }

  /** A message from venom, posted once normalised (with its media). @param {any} raw */
  async #message(raw) {
    const data = normaliseVenomMessage(raw);
    if (!data || this.stopped) return;
    const mapping = lidMappingOf(data);
    if (mapping) this.emit('lid_mapping', mapping);
    if (data.media && !data.is_group && !data.from_me && this.client) {
      try {
        /** @type {any} */ (data.media).data = await withTimeout(this.#download(raw), MEDIA_TIMEOUT_MS, 'media download');
      } catch (err) {
        this.log?.warn?.('cannot download a media message', { message_id: data.message_id, error: /** @type {Error} */ (err)?.message ?? String(err) });
      }
    }
    this.emit('message', data);
  }

  /** The bytes of a received media: venom's decryptFile, else WhatsApp Web's own download. @param {any} raw */
  async #download(raw) {
    try {
      return Buffer.from(await this.client.decryptFile(raw));
    } catch (err) {
      this.log?.debug?.('decryptFile failed; asking WhatsApp Web', { error: err instanceof Error ? err.message : String(err) });
    }
    const dataUrl = await this.client.downloadMedia(jidText(raw.id));
    const comma = typeof dataUrl === 'string' ? dataUrl.indexOf(',') : -1;
    if (comma < 0) throw new Error('WhatsApp Web returned no media');
    return Buffer.from(dataUrl.slice(comma + 1), 'base64');
  }

  /** Reports the end of this driver once: disconnected, logged out or failed. @param {'disconnected' | 'logged_out' | 'failed'} kind @param {string} reason */
  #end(kind, reason) {
    if (this.ended || this.stopped) return;
    this.ended = true;
    if (kind === 'failed') this.emit('failed', { reason });
    else this.emit('disconnected', { reason, loggedOut: kind === 'logged_out' });
  }

  #client() {
    if (!this.client || this.stopped || this.ended) throw new BridgeError('session_not_ready', 'the session is not connected');
    return this.client;
  }

  /** @param {{to: string, text: string, replyTo: string | null}} message */
  async send({ to, text, replyTo }) {
    const client = this.#client();
    const jid = toJid(to);
    let result;
    try {
      if (replyTo) {
        try {
          result = await withTimeout(client.reply(jid, text, replyTo), SEND_TIMEOUT_MS, 'reply');
        } catch (err) {
          if (!isUnknownQuote(err)) throw err;
          this.log?.warn?.('the quoted message is unknown; sending without quoting', { reply_to: replyTo });
          result = await withTimeout(client.sendText(jid, text), SEND_TIMEOUT_MS, 'sendText');
        }
      } else {
        result = await withTimeout(client.sendText(jid, text), SEND_TIMEOUT_MS, 'sendText');
      }
    } catch (err) {
      throw sendErrorOf(err);
    }
    return this.#sentId(result);
  }

  /** @param {{to: string, kind: string, url: string, caption: string | null, filename: string | null, mimeType: string | null}} message */
  async sendMedia(message) {
    const client = this.#client();
    const jid = toJid(message.to);
    let download;
    try {
      download = await downloadMedia(message.url);
    } catch (err) {
      const text = /** @type {Error} */ (err).message;
      const status = /answered HTTP (\d{3})/.exec(text)?.[1];
      const code = status && Number(status) >= 400 && Number(status) < 500 ? 'invalid_request' : 'internal';
      throw new BridgeError(code, `cannot download the media: ${text}`, { cause: err });
    }
    const payload = mediaPayload(message, download);
    let result;
    try {
      result =
        payload.method === 'image'
          ? await withTimeout(client.sendImageFromBase64(jid, payload.dataUrl, payload.filename, payload.caption), SEND_TIMEOUT_MS, 'sendImageFromBase64')
          : await withTimeout(client.sendFileFromBase64(jid, payload.dataUrl, payload.filename, payload.caption), SEND_TIMEOUT_MS, 'sendFileFromBase64');
    } catch (err) {
      throw sendErrorOf(err);
    }
    return this.#sentId(result);
  }

  /** @param {unknown} result */
  #sentId(result) {
    const id = sentMessageId(result);
    if (!id) throw new BridgeError('internal', `venom sent the message but gave no id: ${safe(result)}`);
    return id;
  }

  async logout() {
    const client = this.client;
    this.stopped = true;
    if (client) await client.logout();
  }

  async stop() {
    this.stopped = true;
    if (progressLogs.get(this.context.session) === this.log) progressLogs.delete(this.context.session);
    await this.#closeBrowser();
  }

  async #closeBrowser() {
    const browser = this.browser;
    if (!browser) return;
    const child = browser.process();
    try {
      await withTimeout(browser.close(), 5_000, 'browser.close');
    } catch (err) {
      this.log?.warn?.('Chromium did not close; killing it', { error: /** @type {Error} */ (err)?.message ?? String(err) });
    }
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

/**
 * `promise`, or a rejection after `ms` (venom's promises can stay unsettled forever).
 * @template T
 * @param {Promise<T> | T} promise
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
function withTimeout(promise, ms, what) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${Math.round(ms / 1000)} s`)), ms);
    timer.unref?.();
  });
  return /** @type {Promise<T>} */ (Promise.race([Promise.resolve(promise), timeout]).finally(() => clearTimeout(timer)));
}

/** @param {unknown} value */
function textOrNull(value) {
  return typeof value === 'string' && value.trim() ? value.trim() : null;
}

/** Unix seconds of a number or numeric string, else null. @param {unknown} value */
function seconds(value) {
  const n = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? Math.floor(n) : null;
}

/** @param {unknown} value */
function safe(value) {
  try {
    const text = JSON.stringify(value);
    return text && text.length > 300 ? `${text.slice(0, 300)}...` : String(text);
  } catch {
    return String(value);
  }
}
