import { fileURLToPath } from 'node:url';
import { Router } from 'express';
import { PLAYGROUND_CSS, playgroundPage } from '../playground/page.js';

/** The page's script: server/playground/client.ts as tsc compiled it, beside this build's other files. */
const CLIENT = fileURLToPath(new URL('../playground/client.js', import.meta.url));

/**
 * As for the docs pages (docs-routes.ts): the browser may load nothing from anywhere else. Scripts
 * are the page's own file only; images the page's data: URLs (figures) and blob: URLs (downloads).
 * Inline styles are for the tables of HTML outputs, whose sandboxed frames inherit this policy, so
 * they cannot load anything from elsewhere either. Nothing may frame the page.
 */
const PLAYGROUND_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

/**
 * Navigations a link's code may run on (Sec-Fetch-Site, which browsers send and pages cannot
 * forge): one the user made (typed, pasted, a bookmark, another app) or one of this server's own
 * pages. From another site, even a same-site one (another port of localhost), any page could send
 * the browser here: the reader presses Run.
 */
const OWN_NAVIGATION = ['none', 'same-origin'];

/**
 * GET /playground: a page to type code, run it with its output as it comes, and see its errors,
 * value, figures, tables and the workspace's files. It is public like the docs; everything it does
 * is an API call with the key its user pastes (when the server has keys).
 */
export function playgroundRoutes(keysRequired: () => boolean): Router {
  const router = Router();
  router.use('/playground', (_req, res, next) => {
    res.setHeader('Content-Security-Policy', PLAYGROUND_CSP);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer'); // the URL may carry code
    next();
  });
  router.get('/playground', (req, res) => {
    res.setHeader('Cache-Control', 'no-store'); // it depends on the keys in force and on where the browser came from
    res.type('html').send(playgroundPage(keysRequired(), !OWN_NAVIGATION.includes(req.get('sec-fetch-site') ?? '')));
  });
  router.get('/playground/playground.js', (_req, res) => {
    res.sendFile(CLIENT, { maxAge: '1h' });
  });
  router.get('/playground/playground.css', (_req, res) => {
    res.type('css').send(PLAYGROUND_CSS);
  });
  return router;
}
