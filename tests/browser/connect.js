// Drives the connect page in headless Chromium, as a user would with a keyboard.
// Usage: node tests/browser/connect.js '{"url": "...", "reload": true?, "token": "..."?, "chromium": "/usr/bin/chromium"?}'
// Prints {"open": {status, text}, "reload"?: {status, text}, "elsewhere"?: {status, text},
// "submit"?: {status, text}, "console": [...]} as JSON. With "reload", the page is reloaded
// after it opened, and then the same URL is opened in a second browser context (another
// browser profile: no cookies shared).
// With "from_elsewhere", the link is not typed in: it is clicked on a page of another site
// (http://127.0.0.1:…, served here; the link is on https://localhost:…), as a user clicks
// it in Jira, so the first open is a cross-site navigation.
// The Rust test (tests/connect_browser.rs) decides what is right; this script only reports.
const { chromium } = require('playwright-core');
const http = require('http');

// A page on another site that links to `url`.
function elsewhere(url) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>Jira</title><a id="go" href="${url}">Set up your token</a>`);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const input = JSON.parse(process.argv[2]);

(async () => {
  const browser = await chromium.launch({
    executablePath: input.chromium || '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  try {
    // The test CA is not in Chromium's store; TLS itself is tested on the Rust side.
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 } });
    const page = await context.newPage();
    const consoleMessages = [];
    page.on('console', (m) => consoleMessages.push(m.text()));
    const out = {};
    let opened;
    let site;
    if (input.from_elsewhere) {
      site = await elsewhere(input.url);
      await page.goto(`http://127.0.0.1:${site.address().port}/`);
      [opened] = await Promise.all([page.waitForNavigation(), page.click('#go')]);
    } else {
      opened = await page.goto(input.url);
    }
    out.open = { status: opened.status(), text: await page.innerText('body') };
    // PATGATE_BROWSER_SCREENSHOTS=DIR keeps what the user saw, for a person to look at.
    const shots = process.env.PATGATE_BROWSER_SCREENSHOTS;
    let shot = 0;
    const keep = async () => {
      if (shots) await page.screenshot({ path: `${shots}/${Date.now()}-${shot++}.png`, fullPage: true });
    };
    await keep();
    if (input.reload) {
      const reloaded = await page.reload();
      out.reload = { status: reloaded.status(), text: await page.innerText('body') };
      await keep();
      const elsewhere = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
      const other = await elsewhere.goto(input.url);
      out.elsewhere = { status: other.status(), text: await elsewhere.innerText('body') };
    }
    if (input.token !== undefined) {
      // Keyboard only: focus the field, type, press Enter.
      await page.focus('#token');
      await page.keyboard.type(input.token);
      const [response] = await Promise.all([
        page.waitForNavigation(),
        page.keyboard.press('Enter'),
      ]);
      out.submit = { status: response.status(), text: await page.innerText('body') };
      out.submit.token_in_html = (await page.content()).includes(input.token);
      await keep();
    }
    out.console = consoleMessages;
    if (site) site.close();
    process.stdout.write(JSON.stringify(out));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
