// The venom bridge process (docs/bridges.md): the common bridge server with the venom-bot
// driver, configured from the environment (BRIDGE_PORT defaults to 3013). VENOM_WEB_VERSION
// (optional) pins the WhatsApp Web version venom loads (see the README).

import { installedVersion, runBridge } from '@dashoffice/bridge-common';
import { driverFactory } from './driver.js';

const webVersion = process.env.VENOM_WEB_VERSION?.trim() || null;

await runBridge({
  library: 'venom',
  version: installedVersion(import.meta.url, 'venom-bot'),
  driverFactory: (context) => driverFactory({ ...context, webVersion }),
  defaults: { port: 3013 },
});
