// The whatsapp-web.js bridge process (docs/bridges.md): the common bridge server with the
// whatsapp-web.js driver, configured from the environment (BRIDGE_PORT defaults to 3014).

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { runBridge } from '@dashoffice/bridge-common';
import { driverFactory } from './driver.js';

/** The installed whatsapp-web.js version (what `GET /health` reports). */
export function wwebjsVersion() {
  try {
    const require = createRequire(import.meta.url);
    const path = require.resolve('whatsapp-web.js/package.json');
    return JSON.parse(readFileSync(path, 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

await runBridge({ library: 'wwebjs', version: wwebjsVersion(), driverFactory, defaults: { port: 3014 } });
