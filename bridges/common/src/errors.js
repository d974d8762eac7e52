// The contract's errors (docs/bridges.md, "Errors"): every failure answers
// {"error": {"code", "message"}} with the HTTP status its code belongs to.

/** HTTP status of each error code of the contract, plus the few the contract is silent on. */
export const ERROR_STATUS = Object.freeze({
  invalid_recipient: 400,
  invalid_request: 400,
  unsupported: 400,
  unauthorized: 401,
  session_not_found: 404,
  qr_not_available: 404,
  media_not_found: 404, // GET /media: expired or never stored
  not_found: 404, // a route the bridge does not serve
  method_not_allowed: 405,
  session_not_ready: 409,
  session_limit: 409, // BRIDGE_MAX_SESSIONS reached (the contract names no code)
  payload_too_large: 413,
  rate_limited: 429,
  internal: 500,
});

/**
 * An error a bridge answers as-is. Drivers throw it too, with a contract code:
 * `throw new BridgeError('invalid_recipient', '15551234567 is not on WhatsApp')`.
 * Anything else a driver throws answers 500 `internal`.
 */
export class BridgeError extends Error {
  /**
   * @param {keyof typeof ERROR_STATUS | string} code
   * @param {string} message for the operator
   * @param {{status?: number, cause?: unknown}} [options]
   */
  constructor(code, message, options = {}) {
    super(message, { cause: options.cause });
    this.name = 'BridgeError';
    this.code = code;
    this.status = options.status ?? ERROR_STATUS[/** @type {keyof typeof ERROR_STATUS} */ (code)] ?? 500;
  }
}

/**
 * The contract error a thrown value answers: a BridgeError as it is, an error whose
 * `code` is a contract code with that code's status, anything else 500 `internal`.
 * @param {unknown} err
 * @returns {BridgeError}
 */
export function toBridgeError(err) {
  if (err instanceof BridgeError) return err;
  const code = /** @type {{code?: unknown}} */ (err)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (typeof code === 'string' && Object.hasOwn(ERROR_STATUS, code)) {
    return new BridgeError(code, message, { cause: err });
  }
  return new BridgeError('internal', message || 'internal error', { cause: err });
}
