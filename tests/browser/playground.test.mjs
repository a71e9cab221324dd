// End-to-end test of the web playground in a real browser: starts
// `target/debug/pipelet serve` on a free port with a fresh data dir, drives Debian's
// headless Chromium with playwright-core, and makes a text-to-video and an
// image-to-video request the way a person would, until each video plays.
//
// Run: node --test tests/browser/playground.test.mjs   (scripts/browser-test.sh sets
// everything up). Environment: PIPELET_BIN (default target/debug/pipelet), CHROMIUM
// (default /usr/bin/chromium), PLAYGROUND_SCREENSHOT (default /tmp/playground.png).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.PIPELET_BIN || path.join(ROOT, 'target', 'debug', 'pipelet');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.PLAYGROUND_SCREENSHOT || '/tmp/playground.png';
const START_TIMEOUT_MS = 60_000;
const JOB_TIMEOUT_MS = 180_000;

let server;
let serverLog = '';
let baseUrl;
let adminKey;
let context;
let page;
let scratch;
const pageErrors = [];

// ---------- a PNG made here (no fixture files) ----------

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** An RGB PNG of `width`x`height`: a gradient with a bright disc. */
function makePng(width, height) {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    raw[row] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      const dx = x - width / 3, dy = y - height / 3;
      const disc = dx * dx + dy * dy < (Math.min(width, height) / 5) ** 2;
      const p = row + 1 + x * 3;
      raw[p] = disc ? 250 : Math.floor((x * 255) / width);
      raw[p + 1] = disc ? 220 : Math.floor((y * 255) / height);
      raw[p + 2] = disc ? 90 : 170;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// ---------- the server ----------

function startServer(dataDir) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['serve', '--workers', '1', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
    });
    let stdout = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`pipelet did not say where it listens within ${START_TIMEOUT_MS} ms:\n${stdout}\n${serverLog}`));
    }, START_TIMEOUT_MS);
    child.on('error', (e) => { clearTimeout(timer); reject(new Error(`cannot start ${BIN}: ${e.message}`)); });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`pipelet exited early (${code ?? signal}):\n${stdout}\n${serverLog}`));
    });
    child.stderr.on('data', (d) => { serverLog += d; });
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = stdout.match(/pipelet listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve({ child, url: m[1] });
      }
    });
  });
}

function stopServer(child) {
  return new Promise((resolve) => {
    if (!child || child.exitCode !== null) return resolve();
    const timer = setTimeout(() => { child.kill('SIGKILL'); }, 30_000);
    child.once('exit', () => { clearTimeout(timer); resolve(); });
    child.kill('SIGTERM');
  });
}

before(async () => {
  scratch = mkdtempSync(path.join(tmpdir(), 'pipelet-browser-'));
  const dataDir = path.join(scratch, 'data');
  const started = await startServer(dataDir);
  server = started.child;
  baseUrl = started.url;
  adminKey = readFileSync(path.join(dataDir, 'admin.key'), 'utf8').trim();
  assert.ok(adminKey.length > 10, 'admin.key holds a key');

  context = await chromium.launchPersistentContext(path.join(scratch, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
    ],
    viewport: { width: 1280, height: 1000 },
  });
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  if (context) await context.close().catch(() => {});
  await stopServer(server);
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

// ---------- helpers ----------

async function optionValues(selector) {
  return page.$$eval(`${selector} option`, (os) => os.map((o) => o.value));
}

/** Waits until the request panel shows a request other than `previousId` COMPLETED
 *  and its video is playing; returns the request id. Watches the statuses on the way. */
async function waitForPlayingVideo(previousId) {
  await page.waitForFunction(
    (prev) => {
      const id = document.getElementById('job-id').textContent;
      return id && id !== prev && document.getElementById('job').dataset.status === 'COMPLETED';
    },
    previousId,
    { timeout: JOB_TIMEOUT_MS },
  );
  await page.waitForFunction(() => {
    const v = document.getElementById('video');
    return v && v.src.startsWith('blob:') && v.readyState >= 2 && !v.paused;
  }, null, { timeout: 30_000 });
  const t0 = await page.$eval('#video', (v) => v.currentTime);
  await page.waitForFunction((t) => document.getElementById('video').currentTime !== t, t0, { timeout: 15_000 });
  const error = await page.$eval('#video', (v) => v.error && v.error.message);
  assert.equal(error, null, 'the video element reports no error');
  return page.$eval('#job-id', (n) => n.textContent);
}

/** Records every status the request panel shows, from now on. */
async function recordStatuses() {
  await page.evaluate(() => {
    window.__seen = [];
    const job = document.getElementById('job');
    const note = () => {
      const s = job.dataset.status;
      const text = document.getElementById('job-num').textContent;
      const last = window.__seen[window.__seen.length - 1];
      if (!last || last.s !== s || last.text !== text) window.__seen.push({ s, text });
    };
    new MutationObserver(note).observe(job, { attributes: true, subtree: true, childList: true, characterData: true });
  });
}

// ---------- the tests ----------

test('the page asks for the key once and keeps it', async () => {
  await page.goto(baseUrl + '/');
  await page.waitForSelector('#key-panel', { state: 'visible' });
  assert.equal(await page.isVisible('#app'), false, 'the form waits for a key');

  // A wrong key is refused with the server's own detail.
  await page.fill('#key-input', 'not-a-real-key');
  await page.click('#key-save');
  await page.waitForSelector('#alert', { state: 'visible' });
  assert.match(await page.textContent('#alert-text'), /invalid API key/);

  await page.fill('#key-input', adminKey);
  await page.click('#key-save');
  await page.waitForSelector('#app', { state: 'visible' });
  assert.equal(await page.evaluate(() => localStorage.getItem('pipelet.key')), adminKey);

  // A reload does not ask again.
  await page.reload();
  await page.waitForSelector('#app', { state: 'visible' });
  assert.equal(await page.isVisible('#key-panel'), false);
});

test('the form offers only what /models allows', async () => {
  const models = await optionValues('#model');
  assert.deepEqual(
    [...models].sort(),
    ['wan22-fast-i2v', 'wan22-fast-i2v-pro', 'wan22-fast-i2v-vip', 'wan22-fast-t2v', 'wan22-fast-t2v-premium', 'wan22-fast-t2v-pro'],
  );
  await page.selectOption('#model', 'wan22-fast-t2v');
  assert.deepEqual(
    [...(await optionValues('#size'))].sort(),
    ['1280x720', '480x832', '512x512', '720x1280', '768x768', '832x480'],
  );
  assert.equal(await page.inputValue('#size'), '832x480', 'the default size');
  assert.equal(await page.inputValue('#duration'), '5', 'the default duration');
  await page.selectOption('#size', '832x480');
  assert.deepEqual(await optionValues('#duration'), ['1', '2', '3', '4', '5', '6', '7']);
  await page.selectOption('#duration', '7');
  await page.selectOption('#size', '1280x720');
  assert.deepEqual(await optionValues('#duration'), ['1', '2', '3', '4', '5'], '720p allows at most 5 s');
  assert.equal(await page.inputValue('#duration'), '5', 'a too long duration is clamped');

  await page.selectOption('#model', 'wan22-fast-i2v');
  assert.equal(await page.isVisible('#image-field'), true);
  assert.equal(await page.isVisible('#size-field'), false);
  assert.deepEqual(await optionValues('#height'), ['480', '720']);
  await page.selectOption('#height', '720');
  assert.deepEqual(await optionValues('#duration'), ['1', '2', '3', '4', '5']);
});

test('text-to-video: submit, watch it live, play and download the video', async () => {
  await page.selectOption('#model', 'wan22-fast-t2v');
  await page.selectOption('#size', '512x512');
  await page.selectOption('#duration', '1');
  await page.fill('#prompt', 'A paper boat drifting down a rain-soaked street at dusk');
  await recordStatuses();
  await page.click('#submit');
  const id = await waitForPlayingVideo('');
  assert.match(id, /^[0-9a-f-]{36}$/);

  const seen = await page.evaluate(() => window.__seen);
  assert.ok(seen.length >= 1 && seen[seen.length - 1].s === 'COMPLETED', JSON.stringify(seen));
  assert.ok(seen.every((x) => ['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED'].includes(x.s)), JSON.stringify(seen));

  const link = await page.$eval('#download', (a) => ({ href: a.href, name: a.download, hidden: a.hidden }));
  assert.equal(link.hidden, false);
  assert.ok(link.href.startsWith('blob:'), link.href);
  assert.ok(link.name.endsWith('.mp4'), link.name);
  assert.match(await page.textContent('#video-meta'), /512 × 512/);

  // The signed download link: shown, and it serves the MP4 without a key.
  const share = await page.$eval('#download-link', (a) => ({ href: a.href, hidden: a.hidden, text: a.textContent }));
  assert.equal(share.hidden, false);
  assert.equal(share.text, 'Download link');
  assert.match(share.href, /\/files\/[0-9a-f-]{36}\.mp4\?/);
  const download = await fetch(share.href);
  assert.equal(download.status, 200);
  assert.equal(download.headers.get('content-type'), 'video/mp4');
  assert.ok((await download.arrayBuffer()).byteLength > 1000);

  // It is listed among my recent requests, COMPLETED.
  await page.waitForSelector(`#recent li[data-id="${id}"][data-status="COMPLETED"]`);
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
});

test('image-to-video: upload an image with a preview, then play the result', async () => {
  const previous = await page.textContent('#job-id');
  await page.selectOption('#model', 'wan22-fast-i2v');
  await page.setInputFiles('#image', { name: 'gradient.png', mimeType: 'image/png', buffer: makePng(320, 240) });
  await page.waitForFunction(() => {
    const img = document.getElementById('image-preview');
    return img && img.complete && img.naturalWidth === 320;
  });
  assert.match(await page.textContent('#image-info'), /320 × 240/);
  await page.selectOption('#height', '480');
  await page.selectOption('#duration', '1');
  await page.fill('#prompt', 'The sun rises slowly over the gradient hills');
  await page.click('#submit');
  await waitForPlayingVideo(previous);
  // A 4:3 image at height 480 gives 640x480.
  assert.match(await page.textContent('#video-meta'), /640 × 480/);
  const recent = await page.$$eval('#recent li', (lis) => lis.map((li) => li.dataset.status));
  assert.deepEqual(recent.slice(0, 2), ['COMPLETED', 'COMPLETED']);
});

test("the key's usage this month is shown once a key is entered", async () => {
  // Two finished 1 s videos so far (GET /usage, refreshed with the recent list).
  await page.waitForSelector('#usage[data-completed="2"]', { timeout: 15_000 });
  const text = await page.textContent('#usage');
  assert.match(text, /^This month: 2 videos · \d+ s of video$/, text);
  const seconds = Number(await page.$eval('#usage', (n) => n.dataset.videoSeconds));
  assert.ok(seconds >= 2 && seconds < 4, `video seconds: ${seconds}`);
});

test('the recent list comes from the server: a request made elsewhere is listed', async () => {
  const shown = await page.textContent('#job-id');
  const before = await page.$$eval('#recent li', (lis) => lis.map((li) => li.dataset.id));
  assert.ok(before.length >= 2, 'the earlier tests made two requests');
  // Made with plain HTTP (as curl would), not through this page.
  const res = await fetch(baseUrl + '/queue/wan22-fast-t2v', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + adminKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: 'made with curl', width: 512, height: 512, duration: 1 }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const { request_id: id } = await res.json();
  // Another browser knows nothing of the earlier requests: forget them, then reload.
  await page.evaluate(() => localStorage.removeItem('pipelet.recent'));
  await page.reload();
  await page.waitForSelector('#app', { state: 'visible' });
  await page.waitForSelector(`#recent li[data-id="${id}"]`);
  const listed = await page.$$eval('#recent li', (lis) => lis.map((li) => li.dataset.id));
  assert.equal(listed[0], id, 'newest first');
  assert.deepEqual(listed.slice(1, 1 + before.length), before, 'the earlier requests too, in order');
  assert.match(await page.textContent(`#recent li[data-id="${id}"]`), /wan22-fast-t2v/);
  // Opening an entry from the list shows that request (the earlier one, for the tests after this).
  await page.click(`#recent li[data-id="${shown}"]`);
  await page.waitForFunction((want) => document.getElementById('job-id').textContent === want
    && document.getElementById('job').dataset.status === 'COMPLETED', shown);
});

test("the server's detail is shown when it refuses a request", async () => {
  await page.selectOption('#model', 'wan22-fast-i2v');
  await page.setInputFiles('#image', { name: 'strip.png', mimeType: 'image/png', buffer: makePng(400, 40) });
  await page.waitForFunction(() => document.getElementById('image-preview')?.naturalWidth === 400);
  await page.fill('#prompt', 'A very wide strip');
  await page.click('#submit');
  await page.waitForSelector('#alert', { state: 'visible' });
  const text = await page.textContent('#alert-text');
  assert.match(text, /aspect ratio/, text);
  // The detail names the field itself: the page does not say it twice.
  assert.doesNotMatch(text, /data_uri: data_uri/, text);
  assert.equal(await page.getAttribute('#image', 'aria-invalid'), 'true');

  // A good image makes the refusal stale: the banner and the mark on the input go.
  await page.setInputFiles('#image', { name: 'square.png', mimeType: 'image/png', buffer: makePng(64, 64) });
  await page.waitForSelector('#alert', { state: 'hidden' });
  assert.equal(await page.getAttribute('#image', 'aria-invalid'), null);
});

test('an error found by the page goes once the input is fixed', async () => {
  await page.selectOption('#model', 'wan22-fast-t2v');
  await page.fill('#prompt', '');
  await page.click('#submit');
  await page.waitForSelector('#alert', { state: 'visible' });
  assert.match(await page.textContent('#alert-text'), /write what the video should show/);
  assert.equal(await page.getAttribute('#prompt', 'aria-invalid'), 'true');
  // Whitespace is still no prompt: the error stays.
  await page.fill('#prompt', '   ');
  assert.equal(await page.isVisible('#alert'), true);
  await page.fill('#prompt', 'A lighthouse at night');
  await page.waitForSelector('#alert', { state: 'hidden' });
  assert.equal(await page.getAttribute('#prompt', 'aria-invalid'), null);
});

test('the /docs Try-it box prints a curl command that works when pasted into a shell', async () => {
  const id = await page.textContent('#job-id');
  const jobModel = (await page.textContent('#job-model')).split(' ')[0];
  assert.match(id, /^[0-9a-f-]{36}$/, 'an earlier test made a request');
  await page.goto(baseUrl + '/docs#op-status');
  // The key comes from the playground's storage (the same browser).
  await page.waitForSelector('#op-status .try button.primary', { state: 'visible' });
  assert.equal(await page.inputValue('#key'), adminKey);
  const param = (name) => page.locator('#op-status .try label').filter({ has: page.locator(`span:text-is("${name}")`) }).locator('input');
  await param('model_id').fill(jobModel);
  await param('id').fill(id);
  await page.click('#op-status .try button.primary');
  await page.waitForSelector('#op-status .try pre.curl', { state: 'visible' });
  const curl = await page.textContent('#op-status .try pre.curl');
  assert.match(curl, /-H "Authorization: Bearer \$KEY"/, curl);
  assert.ok(!curl.includes(adminKey), 'the key itself is not printed');
  assert.match(curl, /KEY=/, 'it says where KEY comes from');

  // Pasted into bash with KEY set, it is let in and answers the status.
  const out = execFileSync('bash', ['-c', curl], { env: { ...process.env, KEY: adminKey }, timeout: 30_000 }).toString();
  assert.equal(JSON.parse(out).status, 'COMPLETED', out);
});

test('the page raised no script errors', () => {
  assert.deepEqual(pageErrors, []);
});
