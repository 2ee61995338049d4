import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Duplex } from 'node:stream';
import puppeteer, { type Browser, type BrowserContext } from 'puppeteer-core';
import { startServer, type TestServer } from '../helpers/server.js';

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
    pages = await browser.createBrowserContext({ proxyServer: `http://127.0.0.1:${portOf(pagesOwn!)}`, proxyBypassList: ['evil.test'] });
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
});

/** How many requests the server answered 403 to without matching a route (the Host and Origin check). */
async function refusals(server: TestServer): Promise<number> {
  const text = (await server.get('/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith('rpc_http_request_duration_seconds_count{') && l.includes('route="unmatched"') && l.includes('status="403"'));
  return line ? Number(line.split(' ').pop()) : 0;
}
