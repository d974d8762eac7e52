// The bridge drives the system Chromium (CHROMIUM_PATH, /usr/bin/chromium by default):
// puppeteer must never download a browser of its own, even when install scripts run.
module.exports = { skipDownload: true };
