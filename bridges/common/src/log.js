// A small structured logger: one JSON object per line on stderr (journald keeps it as
// is), with a level threshold. Never pass tokens or message bodies to it.

const LEVELS = Object.freeze({ debug: 10, info: 20, warn: 30, error: 40, silent: 100 });

/**
 * @typedef {object} Logger
 * @property {(message: string, fields?: Record<string, unknown>) => void} debug
 * @property {(message: string, fields?: Record<string, unknown>) => void} info
 * @property {(message: string, fields?: Record<string, unknown>) => void} warn
 * @property {(message: string, fields?: Record<string, unknown>) => void} error
 */

/**
 * @param {{level?: string, stream?: {write(line: string): unknown}, base?: Record<string, unknown>}} [options]
 * @returns {Logger}
 */
export function createLogger(options = {}) {
  const level = options.level ?? 'info';
  if (!Object.hasOwn(LEVELS, level)) {
    throw new Error(`log level ${JSON.stringify(level)} is not one of ${Object.keys(LEVELS).join(', ')}`);
  }
  const threshold = LEVELS[/** @type {keyof typeof LEVELS} */ (level)];
  const stream = options.stream ?? process.stderr;
  const base = options.base ?? {};
  /** @param {'debug' | 'info' | 'warn' | 'error'} name */
  const at = (name) => (/** @type {string} */ message, /** @type {Record<string, unknown>} */ fields = {}) => {
    if (LEVELS[name] < threshold) return;
    const record = { time: new Date().toISOString(), level: name, msg: message, ...base, ...fields };
    stream.write(`${JSON.stringify(record, errorAsText)}\n`);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** A logger that drops everything (tests). */
export const silentLogger = createLogger({ level: 'silent' });

/** @param {string} _key @param {unknown} value */
function errorAsText(_key, value) {
  return value instanceof Error ? value.message : value;
}
