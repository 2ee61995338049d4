import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Duplex } from 'node:stream';
import { deflateSync } from 'node:zlib';
import puppeteer, { type Browser, type BrowserContext, type Page } from 'puppeteer-core';
import { startServer, type TestServer } from '../helpers/server.js';
import { tenantsFile } from '../helpers/tenants.js';
import { until } from '../helpers/until.js';

/**
 * The server as a user's browser sees it: Debian's headless Chromium, driven by puppeteer-core.
 * Chromium resolves evil.test (an attacker's name) to 127.0.0.1; everything else goes to proxies
 * on loopback that refuse it, so no request leaves this machine. The pages' proxy records what
 * reaches it; Chromium's own background traffic (time, updates, autofill) goes to another.
 */

/** Debian's chromium; npm test installs it (sandbox-image/host-setup.sh --test, as root on Debian). */
function chromium(): string {
  const found = (process.env.PATH ?? '/usr/bin')
    .split(':')
    .flatMap((dir) => ['chromium', 'chromium-browser'].map((name) => path.join(dir, name)))
    .find((file) => existsSync(file));
  if (!found) throw new Error('chromium is missing: run npm test as root on Debian (it installs chromium), or apt-get install chromium');
  return found;
}

/** An HTTP proxy on 127.0.0.1 that refuses every request, plain or CONNECT, noting where it was for. */
async function refusingProxy(seen: string[]): Promise<http.Server> {
  const proxy = http.createServer((req, res) => {
    seen.push(req.url ?? '');
    res.writeHead(403).end();
  });
  proxy.on('connect', (req: http.IncomingMessage, socket: Duplex) => {
    seen.push(req.url ?? '');
    socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
  });
  proxy.listen(0, '127.0.0.1');
  await new Promise((resolve) => proxy.once('listening', resolve));
  return proxy;
}

/** An HTTP server on 127.0.0.1 that answers every request with `html`: the attacker's page. */
async function servePage(html: string, port = 0): Promise<http.Server> {
  const server = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(html));
  server.listen(port, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return server;
}

const portOf = (server: http.Server) => (server.address() as AddressInfo).port;

/** What the page's code tries; each answer is what that code got back. */
async function attacks(api: string): Promise<{ what: string; status?: number; type?: string; text?: string; error?: string }[]> {
  const execute = JSON.stringify({ code: 'import os\nprint(os.listdir())' });
  const mcp = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'run_python_code', arguments: { code: 'print(6 * 7)' } } });
  const tries: [string, string, RequestInit][] = [
    ['cors /execute', '/execute', { method: 'POST', headers: { 'content-type': 'application/json' }, body: execute }],
    ['no-cors /execute', '/execute', { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: execute }],
    ['cors /mcp', '/mcp', { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: mcp }],
    ['no-cors /mcp', '/mcp', { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: mcp }],
  ];
  return Promise.all(
    tries.map(([what, route, init]) =>
      fetch(api + route, init).then(
        async (res) => ({ what, status: res.status, type: res.type, text: await res.text() }),
        (err: Error) => ({ what, error: String(err) }),
      ),
    ),
  );
}

describe('in a browser (headless Chromium)', () => {
  let browser: Browser;
  let pages: BrowserContext;
  let profile: string;
  let proxies: http.Server[];
  let server: TestServer;
  /** Requests of the pages that tried to leave the machine (host:port or URL), all refused. */
  const outside: string[] = [];

  before(async () => {
    server = await startServer();
    const [chromiumOwn, pagesOwn] = (proxies = [await refusingProxy([]), await refusingProxy(outside)]);
    profile = mkdtempSync(path.join(os.tmpdir(), 'rpc-chromium-'));
    browser = await puppeteer.launch({
      executablePath: chromium(),
      headless: true,
      userDataDir: profile,
      args: [
        '--headless',
        '--no-sandbox', // as root; the page is ours
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-features=AutofillServerCommunication', // the profile's own queries, not the page's
        '--host-resolver-rules=MAP evil.test 127.0.0.1',
        `--proxy-server=http://127.0.0.1:${portOf(chromiumOwn!)}`,
      ],
    });
    // Loopback addresses bypass a proxy by themselves; evil.test must reach 127.0.0.1 directly too.
    mkdirSync(path.join(profile, 'downloads'));
    pages = await browser.createBrowserContext({
      proxyServer: `http://127.0.0.1:${portOf(pagesOwn!)}`,
      proxyBypassList: ['evil.test'],
      downloadBehavior: { policy: 'allow', downloadPath: path.join(profile, 'downloads') },
    });
  });
  after(async () => {
    await browser?.close();
    rmSync(profile, { recursive: true, force: true });
    for (const proxy of proxies) proxy.close();
    await server.close();
    assert.deepEqual(await server.settle(), []);
  });

  it('/docs and /redoc render the API with nothing from other hosts', async () => {
    const page = await pages.newPage();
    try {
      // The pages' proxy does see a request that tries to leave (from a page without the docs' CSP).
      await page.goto(server.url + '/');
      await page.evaluate(() => fetch('https://outside.example/probe').catch(() => null));
      assert.deepEqual(outside, ['outside.example:443']);
      outside.length = 0;
      for (const route of ['/docs/', '/redoc']) {
        await page.goto(server.url + route, { waitUntil: 'load' });
        await page.waitForFunction("document.body.innerText.includes('/execute') && document.body.innerText.includes('/install-package')", {
          timeout: 30_000,
        });
      }
      assert.deepEqual(outside, [], 'the docs asked other hosts for something');
    } finally {
      outside.length = 0;
      await page.close();
    }
  });

  it("a page of another site (evil.test) gets nothing back from /execute and /mcp, and nothing runs", async () => {
    const evil = await servePage('<!DOCTYPE html><title>evil</title><p>nothing to see</p>');
    const page = await pages.newPage();
    try {
      const runs = server.runs();
      const refusedBefore = await refusals(server);
      await page.goto(`http://evil.test:${portOf(evil)}/`);
      const answers = await page.evaluate(attacks, server.url);
      for (const answer of answers) {
        // Refused preflights fail the fetch; a no-cors answer is opaque (no status, no body).
        assert.ok(answer.error !== undefined || (answer.type === 'opaque' && answer.status === 0 && answer.text === ''), JSON.stringify(answer));
      }
      assert.equal(server.runs(), runs, 'the sandbox was asked to run the page\'s code');
      // They did reach the server, which refused them (two preflights and two no-cors posts).
      assert.equal((await refusals(server)) - refusedBefore, 4);
    } finally {
      await page.close();
      evil.close();
    }
  });

  it('a page whose name was rebound to 127.0.0.1 (DNS rebinding) gets 403 from /execute and /mcp, and nothing runs', async () => {
    // The attacker's server answers evil.test:PORT first; then the name means this machine, where
    // the API listens on that port: the page's same-origin requests reach it with Host evil.test.
    const first = await servePage('<!DOCTYPE html><title>evil</title><p>wait for it</p>');
    const port = portOf(first);
    const page = await pages.newPage();
    const rebound = { server: undefined as TestServer | undefined };
    try {
      await page.goto(`http://evil.test:${port}/`);
      first.closeAllConnections();
      await new Promise((resolve) => first.close(resolve));
      rebound.server = await startServer({ PORT: String(port) });
      const answers = await page.evaluate(attacks, '');
      for (const answer of answers) {
        if (answer.what.startsWith('no-cors')) continue; // same-origin: no-cors changes nothing, checked with the rest
        assert.equal(answer.status, 403, JSON.stringify(answer));
        const body = JSON.parse(answer.text ?? '') as Record<string, unknown>;
        assert.equal(body.success, false);
        assert.equal(body.result, null);
        assert.equal(body.error, `Host "evil.test:${port}" is not allowed: this server answers loopback names (localhost, 127.0.0.1, [::1]) and the names listed in ALLOWED_HOSTS`);
      }
      assert.ok(answers.every((a) => a.status === 403), JSON.stringify(answers));
      assert.equal(rebound.server.runs(), 0, 'the sandbox was asked to run the page\'s code');
    } finally {
      await page.close();
      await rebound.server?.close();
    }
  });

  describe('the playground', () => {
    /** A new page of the playground at `route`, loaded and settled. */
    const open = async (route = '/playground', url = server.url) => {
      const page = await pages.newPage();
      await page.goto(url + route, { waitUntil: 'networkidle0' });
      return page;
    };
    /** Replaces the editor's code by typing it, as a person does. */
    const typeCode = async (page: Page, code: string) => {
      await page.$eval('#code', (el) => {
        (el as unknown as { value: string }).value = '';
      });
      await page.type('#code', code);
    };
    /** What the page shows at `selector`, as a person reads it; and the run's state. */
    const shownAt = (page: Page, selector: string) => page.$eval(selector, (el) => (el as unknown as { innerText: string }).innerText);
    const stateOf = (page: Page) => page.$eval('#status', (el) => (el as unknown as { dataset: { state: string } }).dataset.state);
    const settled = (page: Page) => page.waitForFunction("['done', 'error'].includes(document.getElementById('status').dataset.state)", { timeout: 60_000 });
    const downloaded = (name: string) => path.join(profile, 'downloads', name);

    after(() => {
      assert.deepEqual(outside, [], 'the playground asked other hosts for something');
    });

    it('serves one page whose every asset is its own, under a CSP that allows nothing from elsewhere', async () => {
      const res = await fetch(`${server.url}/playground`);
      assert.equal(res.status, 200);
      const csp = res.headers.get('content-security-policy') ?? '';
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /script-src 'self'(;|$)/);
      assert.match(csp, /connect-src 'self'(;|$)/);
      const html = await res.text();
      assert.deepEqual([...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]), ['/playground/playground.css', '/playground/playground.js', '/docs/']);
      assert.doesNotMatch(html, /<script>/); // no inline script
      for (const asset of ['/playground/playground.js', '/playground/playground.css']) assert.equal((await fetch(server.url + asset)).status, 200, asset);
    });

    it('type code and run it: the output streams in while the code still runs', async () => {
      const page = await open();
      try {
        assert.equal(await page.$eval('#key-bar', (el) => (el as unknown as { offsetHeight: number }).offsetHeight), 0, 'no key is asked for without keys');
        await typeCode(page, 'import time\nprint("first", flush=True)\ntime.sleep(2)\nprint("second")');
        await page.click('#run');
        await page.waitForFunction("document.getElementById('stream').innerText.includes('first')", { timeout: 30_000 });
        // Streamed, not at the end: the first line is there, the second and the result are not yet.
        assert.deepEqual([await stateOf(page), await shownAt(page, '#status')], ['running', 'running…']);
        assert.equal(await shownAt(page, '#stream'), 'first\n');
        await settled(page);
        assert.equal(await shownAt(page, '#stream'), 'first\nsecond\n');
        assert.equal(await stateOf(page), 'done');
      } finally {
        await page.close();
      }
    });

    it('an error shows its message, which names the line, and marks that line', async () => {
      const page = await open();
      try {
        await typeCode(page, 'x = 1\ny = 2\nprint(undefined_name)');
        await page.click('#run');
        await settled(page);
        assert.equal(await page.$eval('#error-message', (el) => el.textContent), "NameError: name 'undefined_name' is not defined (line 3)");
        assert.equal(await page.$eval('#error-line', (el) => el.textContent), 'line 3');
        assert.equal(await page.$eval('#gutter .error-line', (el) => el.textContent), '3');
        // The traceback is in the output the code wrote (stderr), and not shown a second time.
        assert.match(await shownAt(page, '#stream .stderr'), /^Traceback \(most recent call last\):\n {2}File "<code>", line 3, in <module>/);
        assert.equal(await page.$eval('#traceback', (el) => (el as unknown as { hidden: boolean }).hidden), true);
        assert.equal(await stateOf(page), 'error');
      } finally {
        await page.close();
      }
    });

    it("the workspace's files are listed with download links that save their exact bytes; an upload reaches the code", async () => {
      const page = await open();
      try {
        await typeCode(page, 'open("report.csv", "w").write("a,b\\n1,2\\n")');
        await page.click('#run');
        await settled(page);
        await page.waitForFunction("[...document.querySelectorAll('#file-list a')].some((a) => a.textContent === 'report.csv')");
        const link = await page.$eval('#file-list a', (a) => [a.getAttribute('href'), a.getAttribute('download')]);
        assert.deepEqual(link, ['/files/report.csv', 'report.csv']);
        await page.click('#file-list a');
        await until(() => existsSync(downloaded('report.csv')), 'the download');
        assert.equal(readFileSync(downloaded('report.csv'), 'utf8'), 'a,b\n1,2\n');

        const upload = path.join(profile, 'upload.txt');
        writeFileSync(upload, 'sent from the page');
        const input = await page.$('#upload');
        await (input as unknown as { uploadFile(file: string): Promise<void> }).uploadFile(upload);
        await page.waitForFunction("[...document.querySelectorAll('#file-list a')].some((a) => a.textContent === 'upload.txt')");
        await typeCode(page, 'print(open("upload.txt").read())');
        await page.click('#run');
        await settled(page);
        assert.equal(await shownAt(page, '#stream'), 'sent from the page\n');
      } finally {
        await page.close();
      }
    });

    it('a link carries code: ?code= opens the page with it, and &run=1 also runs it on load', async () => {
      const runs = server.runs();
      const only = await open(`/playground?code=${encodeURIComponent('print(6 * 7)')}`);
      try {
        assert.equal(await only.$eval('#code', (el) => (el as unknown as { value: string }).value), 'print(6 * 7)');
        assert.equal(server.runs(), runs, 'code ran without &run=1');
      } finally {
        await only.close();
      }
      const page = await open(`/playground?code=${encodeURIComponent('print(6 * 7)')}&run=1`);
      try {
        await settled(page);
        assert.equal(await shownAt(page, '#stream'), '42\n');
        assert.equal(server.runs(), runs + 1);
      } finally {
        await page.close();
      }
    });

    it('a page of another site that sends the browser to a link with &run=1 gets the code shown, not run', async () => {
      const link = `${server.url}/playground?code=${encodeURIComponent('import shutil\nshutil.rmtree(".", ignore_errors=True)')}&run=1`;
      const evil = await servePage(`<!DOCTYPE html><title>evil</title><a id="go" href="${link}">cute cats</a>`);
      const page = await pages.newPage();
      try {
        const runs = server.runs();
        await page.goto(`http://evil.test:${portOf(evil)}/`);
        await Promise.all([page.waitForNavigation({ waitUntil: 'networkidle0' }), page.click('#go')]);
        assert.equal(page.url(), link);
        assert.equal(await page.$eval('#code', (el) => (el as unknown as { value: string }).value), 'import shutil\nshutil.rmtree(".", ignore_errors=True)');
        assert.equal(await page.$eval('#notice', (el) => el.textContent), 'Another site sent you here with code to run. Read it, then press Run: it does not run by itself.');
        assert.equal(server.runs(), runs, "another site's link ran its code");
      } finally {
        await page.close();
        evil.close();
      }
    });

    it('the value, figures and tables render safely: images from their base64, HTML only in a frame that runs no script (a mocked answer)', async () => {
      const page = await open();
      const envelope = {
        success: true, result: 'drawn', error: null, execution_id: '6f1c1d38-5d1e-4f4e-9d1a-3b0c6a1e2f00', stdout: 'drawn\n', stderr: '',
        exit_code: 0, duration_ms: 12, timed_out: false, truncated: false, oom_killed: false, traceback: null, warnings: [],
        value: '5',
        // As the runner gives them: a figure's PNG; each displayed object or value, its forms ending with its text/plain.
        outputs: [
          { mime: 'image/png', data: png(3, 2).toString('base64'), source: 'figure' },
          { mime: 'image/svg+xml', data: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="7" height="4"><script>parent.pwned=1</script><rect width="7" height="4"/></svg>').toString('base64'), source: 'display' },
          { mime: 'text/plain', data: '<SVG drawing>', source: 'display' },
          { mime: 'text/plain', data: '<b>plain</b>', source: 'display' },
          { mime: 'application/json', data: '{"a":[1,2]}', source: 'display' },
          { mime: 'text/plain', data: "{'a': [1, 2]}", source: 'display' },
          { mime: 'text/html', data: '<table><tr><td>cell</td></tr></table><script>parent.pwned = 1; top.pwned = 1</script><img src="https://outside.example/pixel.png">', source: 'value' },
          { mime: 'text/plain', data: '   a\n0  cell', source: 'value' },
        ],
        outputs_truncated: true,
      };
      try {
        await page.setRequestInterception(true);
        page.on('request', (request) => {
          if (!request.url().endsWith('/execute')) return void request.continue();
          void request.respond({
            status: 200,
            contentType: 'text/event-stream; charset=utf-8',
            body: `event: stdout\ndata: {"text":"drawn\\n"}\n\nevent: result\ndata: ${JSON.stringify(envelope)}\n\n`,
          });
        });
        await typeCode(page, '2 + 3');
        await page.click('#run');
        await settled(page);
        await page.waitForFunction("[...document.querySelectorAll('#outputs img')].every((img) => img.complete && img.naturalWidth > 0)");
        const images = await page.$$eval('#outputs img', (imgs) => imgs.map((img) => [(img as unknown as { naturalWidth: number }).naturalWidth, (img as unknown as { naturalHeight: number }).naturalHeight]));
        assert.deepEqual(images, [[3, 2], [7, 4]]);
        assert.equal(await page.$eval('#value-text', (el) => el.textContent), '5');
        const frame = await page.$eval('#outputs iframe', (f) => [f.getAttribute('sandbox'), f.getAttribute('srcdoc')]);
        assert.deepEqual(frame, ['', envelope.outputs[6]!.data]);
        // The richest form of each: a text/plain is shown only when it is all an object has.
        assert.deepEqual(await page.$$eval('#outputs figure', (fs) => fs.map((f) => f.getAttribute('data-mime'))), ['image/png', 'image/svg+xml', 'text/plain', 'application/json', 'text/html']);
        assert.deepEqual(await page.$$eval('#outputs pre', (pres) => pres.map((p) => p.textContent)), ['<b>plain</b>', '{\n  "a": [\n    1,\n    2\n  ]\n}']);
        assert.equal(await page.$$eval('#outputs b', (bs) => bs.length), 0, 'sandbox markup reached the page');
        assert.equal(await page.evaluate('window.pwned'), undefined, "the sandbox's script ran");
        assert.equal(await page.$eval('#outputs-note', (el) => (el as unknown as { hidden: boolean }).hidden), false);
        await new Promise((resolve) => setTimeout(resolve, 500)); // the frame's <img> would have tried by now
      } finally {
        await page.close();
      }
    });

    it('type import matplotlib.pyplot as plt; plt.plot([1,2,3]); print("hi"), run, and find hi and a rendered <img> whose natural width is greater than 0', async () => {
      const page = await open();
      try {
        await typeCode(page, 'import matplotlib.pyplot as plt; plt.plot([1,2,3]); print("hi")');
        await page.click('#run');
        await settled(page);
        assert.equal(await shownAt(page, '#stream'), 'hi\n');
        await page.waitForFunction("[...document.querySelectorAll('#outputs img')].some((img) => img.complete && img.naturalWidth > 0)", { timeout: 10_000 });
      } finally {
        await page.close();
      }
    });

    it('with keys, a shared link never runs before the key is pasted, and the key stays in the page', async () => {
      const keyed = await startServer({ TENANTS_FILE: tenantsFile({ alice: '' }) });
      const page = await open(`/playground?code=${encodeURIComponent('open("out.txt", "w").write("keyed bytes")\nprint("shared")')}&run=1`, keyed.url);
      try {
        assert.equal(keyed.runs(), 0, 'a shared link ran before the key was pasted');
        assert.ok((await page.$eval('#key-bar', (el) => (el as unknown as { offsetHeight: number }).offsetHeight)) > 0, 'the key is asked for');
        assert.match(String(await page.$eval('#notice', (el) => el.textContent)), /^This link carries code to run\. Read it, paste your API key above, then press Run/);
        await page.click('#run');
        assert.equal(await page.$eval('#notice', (el) => el.textContent), 'This server needs an API key: paste it above, then press Run.');
        assert.equal(keyed.runs(), 0);

        await page.type('#key', 'alice-key');
        await page.waitForFunction("document.getElementById('files-note').innerText.startsWith('No files yet')");
        assert.equal(keyed.runs(), 0, 'pasting the key ran the code');
        await page.click('#run');
        await settled(page);
        assert.equal(await shownAt(page, '#stream'), 'shared\n');
        assert.equal(keyed.runs(), 1);
        // A download with a key goes through fetch with the header, and saves the exact bytes.
        await page.waitForFunction("[...document.querySelectorAll('#file-list a')].some((a) => a.textContent === 'out.txt')");
        await page.click('#file-list a');
        await until(() => existsSync(downloaded('out.txt')), 'the download');
        assert.equal(readFileSync(downloaded('out.txt'), 'utf8'), 'keyed bytes');
        // Nowhere but in the page's memory.
        assert.deepEqual(await page.evaluate('[localStorage.length, sessionStorage.length, document.cookie, location.href.includes("alice")]'), [0, 0, '', false]);
      } finally {
        await page.close();
        await keyed.close();
      }
      assert.deepEqual(await keyed.settle(), []);
    });
  });
});

/** A valid PNG of `width` x `height` grey pixels, made here (signature, IHDR, IDAT, IEND, each with its CRC). */
function png(width: number, height: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (data: Buffer) => {
    let c = 0xffffffff;
    for (const byte of data) c = crcTable[(c ^ byte) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([length, body, sum]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const rows = Buffer.concat(Array.from({ length: height }, () => Buffer.concat([Buffer.from([0]), Buffer.alloc(width * 3, 0x80)])));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', header), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

/** How many requests the server answered 403 to without matching a route (the Host and Origin check). */
async function refusals(server: TestServer): Promise<number> {
  const text = (await server.get('/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith('rpc_http_request_duration_seconds_count{') && l.includes('route="unmatched"') && l.includes('status="403"'));
  return line ? Number(line.split(' ').pop()) : 0;
}
