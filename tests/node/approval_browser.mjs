// The approval page in a real browser: Debian's chromium driven by puppeteer-core opens an
// approver's signed link, checks what the page shows (the checklist rendered from Markdown, no
// script from it), approves with a comment and reads the result. Screenshots go to OUT_DIR.
//   node approval_browser.mjs SIGNED_LINK OUT_DIR
import puppeteer from 'puppeteer-core';
import { mkdirSync } from 'node:fs';

const [link, outDir] = process.argv.slice(2);
if (!link || !outDir) {
  console.error('usage: node approval_browser.mjs SIGNED_LINK OUT_DIR');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // root in a container has no user namespaces for chromium's sandbox
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage();
  const alerts = [];
  page.on('dialog', async (d) => { alerts.push(d.message()); await d.dismiss(); });
  const res = await page.goto(link, { waitUntil: 'load' });
  if (res.status() !== 200) throw new Error(`the link answered ${res.status()}`);
  await page.screenshot({ path: `${outDir}/1-gate.png`, fullPage: true });
  // the inline style is allowed by its hash in the CSP (a wrong hash leaves the page unstyled)
  const width = await page.$eval('body', (e) => getComputedStyle(e).maxWidth);
  if (width === 'none') throw new Error('the page style was blocked (check the CSP hash)');
  const checklist = await page.$eval('#checklist', (e) => e.innerHTML);
  if (!checklist.includes('<li>')) throw new Error(`the checklist is not rendered as Markdown: ${checklist}`);
  const who = await page.$eval('#who', (e) => e.textContent);
  if (who !== 'alice') throw new Error(`voting as ${who}, not alice`);
  await page.type('#comment', 'Checked in the browser');
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('#approve')]);
  await page.screenshot({ path: `${outDir}/2-voted.png`, fullPage: true });
  const result = await page.$eval('#result', (e) => e.textContent);
  if (!result.includes('the gate is decided: approved')) throw new Error(`after the vote the page says: ${result}`);
  const votes = await page.$eval('#votes', (e) => e.textContent);
  if (!votes.includes('Checked in the browser')) throw new Error(`the votes table lacks the comment: ${votes}`);
  if (alerts.length > 0) throw new Error(`a script ran on the page: ${alerts.join(', ')}`);
  console.log(`browser ok: ${result}`);
} finally {
  await browser.close();
}
