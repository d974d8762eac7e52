// The whatsapp-web.js bridge process (docs/bridges.md): the common bridge server with the
// whatsapp-web.js driver, configured from the environment (BRIDGE_PORT defaults to 3014).

import { installedVersion, runBridge } from '@dashoffice/bridge-common';
import { driverFactory } from './driver.js';

await runBridge({ library: 'wwebjs', version: installedVersion(import.meta.url, 'whatsapp-web.js'), driverFactory, defaults: { port: 3014 } });
