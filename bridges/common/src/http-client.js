// A minimal HTTP client on node:http and node:https, with an agent the caller owns (so a
// closing bridge leaves no socket behind), an abort signal and a cap on the answer size.

import http from 'node:http';
import https from 'node:https';

/**
 * @typedef {object} HttpAnswer
 * @property {number} status
 * @property {import('node:http').IncomingHttpHeaders} headers
 * @property {Buffer} body
 */

/**
 * @param {string | URL} url
 * @param {{
 *   method?: string,
 *   headers?: Record<string, string>,
 *   body?: Buffer,
 *   signal?: AbortSignal,
 *   agents?: {http?: http.Agent, https?: https.Agent},
 *   maxBytes?: number,
 * }} [options]
 * @returns {Promise<HttpAnswer>}
 */
export function httpRequest(url, options = {}) {
  const target = typeof url === 'string' ? new URL(url) : url;
  const secure = target.protocol === 'https:';
  if (!secure && target.protocol !== 'http:') {
    return Promise.reject(new Error(`unsupported URL scheme ${target.protocol}`));
  }
  const transport = secure ? https : http;
  // Without agents of the caller's, one connection per request (nothing left open).
  const agent = (secure ? options.agents?.https : options.agents?.http) ?? false;
  const maxBytes = options.maxBytes ?? 1024 * 1024;
  const headers = { ...options.headers };
  if (options.body) headers['content-length'] = String(options.body.length);
  return new Promise((resolve, reject) => {
    const request = transport.request(target, { method: options.method ?? 'GET', headers, agent, signal: options.signal }, (response) => {
      /** @type {Buffer[]} */
      const chunks = [];
      let size = 0;
      response.on('data', (/** @type {Buffer} */ chunk) => {
        size += chunk.length;
        if (size > maxBytes) {
          response.destroy(new Error(`the answer exceeds ${maxBytes} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      response.on('error', reject);
      response.on('close', () => {
        if (!response.complete) reject(new Error('the answer was cut short'));
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
    });
    request.on('error', reject);
    request.end(options.body);
  });
}
