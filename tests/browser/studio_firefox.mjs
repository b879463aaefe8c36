// The studio in Firefox (Debian's firefox-esr over WebDriver BiDi, driven by puppeteer-core):
// sign in with the link the bot made, make an image, watch it finish, rate it, and check that a
// request without the CSRF token is refused. Prints one JSON line for the Python test to assert on.
// Usage: node studio_firefox.mjs BASE LINK NAME
import puppeteer from 'puppeteer-core';

const [base, link, name] = process.argv.slice(2);
const browser = await puppeteer.launch({
  browser: 'firefox', executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr', headless: true,
  extraPrefsFirefox: {'network.proxy.type': 0, 'app.update.enabled': false},
});
const out = {};
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(60_000);
  await page.goto(base + link);
  await page.locator(`::-p-text(Sign in as ${name})`).click();
  await page.waitForFunction(() => location.pathname === '/studio');
  out.signedIn = true;
  await page.locator('#prompt').fill('a lighthouse at dusk');
  await page.locator('#generate').click();
  await page.waitForSelector('#results li img');
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Done'));
  out.imageLoaded = await page.$eval('#results li img', img => img.complete && img.naturalWidth > 0);
  out.ref = await page.$eval('#results .actions', el => el.dataset.ref);
  await page.locator("#results button[aria-label='Rate 4 stars']").click();
  await page.waitForSelector("#results button[aria-label='Rate 4 stars'][aria-pressed=true]");
  out.rated = true;
  out.noToken = await page.evaluate(() => fetch('/studio/generate', {method: 'POST',
    headers: {'Content-Type': 'application/json', 'Accept': 'application/json'},
    body: JSON.stringify({prompt: 'no token'})}).then(r => r.status));
  out.userAgent = await browser.version();
} catch (err) {
  out.error = String(err && err.stack || err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
