// A bridge's configuration, from the environment. Validated at start: a bridge refuses
// to start without a token, with a malformed value, and names the variable at fault.

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

/** The variables a bridge reads; any other BRIDGE_* variable is reported as unknown. */
export const ENV_VARIABLES = Object.freeze([
  'BRIDGE_PORT',
  'BRIDGE_HOST',
  'BRIDGE_TOKEN',
  'BRIDGE_TOKEN_FILE',
  'BRIDGE_DATA_DIR',
  'BRIDGE_MAX_SESSIONS',
  'BRIDGE_MAX_UPLOAD_BYTES',
  'BRIDGE_PUBLIC_URL',
  'BRIDGE_LOG_LEVEL',
  'BRIDGE_RECONNECT_MAX_ATTEMPTS',
  'DASHD_URL',
  'CHROMIUM_PATH',
]);

export class ConfigError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'ConfigError';
  }
}

/**
 * @typedef {object} BridgeConfig
 * @property {number} port
 * @property {string} host
 * @property {string} token the bearer token of the API and the HMAC key of events (never log it)
 * @property {string} dataDir
 * @property {string} dashdUrl
 * @property {number} maxSessions
 * @property {number} maxUploadBytes the body limit of POST /send-media (files uploaded in `data`)
 * @property {string | undefined} publicUrl base URL under which dashd reaches this bridge (media links)
 * @property {string} logLevel
 * @property {number} reconnectMaxAttempts 0: reconnect for ever
 * @property {string} chromiumPath for the browser drivers (venom, whatsapp-web.js)
 * @property {string[]} warnings unknown variables and other things worth telling the operator
 */

/**
 * Reads the configuration from `env`.
 * @param {Record<string, string | undefined>} env
 * @param {{port?: number, maxSessions?: number, dataDir?: string}} [defaults] per bridge (each library has its port)
 * @returns {BridgeConfig}
 */
export function loadConfig(env, defaults = {}) {
  const warnings = [];
  for (const name of Object.keys(env)) {
    if (name.startsWith('BRIDGE_') && !ENV_VARIABLES.includes(name)) {
      warnings.push(`unknown environment variable ${name} is ignored`);
    }
  }
  const text = (/** @type {string} */ name) => {
    const value = env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  };
  const integer = (/** @type {string} */ name, /** @type {number} */ fallback, /** @type {number} */ min, /** @type {number} */ max) => {
    const value = text(name);
    if (value === undefined) return fallback;
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new ConfigError(`${name}=${JSON.stringify(value)} must be an integer from ${min} to ${max}`);
    }
    return Number(value);
  };

  const port = integer('BRIDGE_PORT', defaults.port ?? 3012, 0, 65535);
  const host = text('BRIDGE_HOST') ?? '127.0.0.1';

  const token = readToken(env);
  if (token.length < 16) warnings.push('the bridge token is shorter than 16 characters; use a long random one');

  const dashdUrl = text('DASHD_URL') ?? 'http://127.0.0.1:3009';
  checkHttpUrl('DASHD_URL', dashdUrl);
  const publicUrl = text('BRIDGE_PUBLIC_URL');
  if (publicUrl !== undefined) checkHttpUrl('BRIDGE_PUBLIC_URL', publicUrl);

  const logLevel = text('BRIDGE_LOG_LEVEL') ?? 'info';
  if (!['debug', 'info', 'warn', 'error', 'silent'].includes(logLevel)) {
    throw new ConfigError(`BRIDGE_LOG_LEVEL=${JSON.stringify(logLevel)} must be debug, info, warn, error or silent`);
  }

  return {
    port,
    host,
    token,
    dataDir: resolve(text('BRIDGE_DATA_DIR') ?? defaults.dataDir ?? 'bridge-data'),
    dashdUrl: dashdUrl.replace(/\/+$/, ''),
    maxSessions: integer('BRIDGE_MAX_SESSIONS', defaults.maxSessions ?? 10, 1, 100000),
    maxUploadBytes: integer('BRIDGE_MAX_UPLOAD_BYTES', 16 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    publicUrl: publicUrl?.replace(/\/+$/, ''),
    logLevel,
    reconnectMaxAttempts: integer('BRIDGE_RECONNECT_MAX_ATTEMPTS', 0, 0, 1000000),
    chromiumPath: text('CHROMIUM_PATH') ?? '/usr/bin/chromium',
    warnings,
  };
}

/**
 * BRIDGE_TOKEN or the first line of BRIDGE_TOKEN_FILE; exactly one of them.
 * @param {Record<string, string | undefined>} env
 */
function readToken(env) {
  const inline = env.BRIDGE_TOKEN?.trim() || undefined;
  const file = env.BRIDGE_TOKEN_FILE?.trim() || undefined;
  if (inline && file) throw new ConfigError('set BRIDGE_TOKEN or BRIDGE_TOKEN_FILE, not both');
  if (inline) return inline;
  if (!file) {
    throw new ConfigError('no token: set BRIDGE_TOKEN_FILE (a file holding the token) or BRIDGE_TOKEN; the bridge does not run without one');
  }
  let content;
  try {
    content = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`BRIDGE_TOKEN_FILE ${file} cannot be read: ${/** @type {Error} */ (err).message}`);
  }
  const token = content.split(/\r?\n/)[0].trim();
  if (!token) throw new ConfigError(`BRIDGE_TOKEN_FILE ${file} holds no token`);
  return token;
}

/** @param {string} name @param {string} value */
function checkHttpUrl(name, value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${name}=${JSON.stringify(value)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`${name}=${JSON.stringify(value)} must be an http:// or https:// URL`);
  }
}
