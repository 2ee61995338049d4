import type { Response } from 'express';

/** A comment line this often keeps an open but quiet stream alive through proxies that drop idle connections. */
const KEEPALIVE_MS = 15_000;

/**
 * Server-Sent Events on one response. The stream opens (200 and its headers) with the first event,
 * so that whatever is refused before it is still an ordinary answer with its own status; once open,
 * the one error handler ends it with a `result` event carrying the error envelope (see app.ts).
 */
export class EventStream {
  private keepalive: NodeJS.Timeout | undefined;

  constructor(private readonly res: Response) {
    res.locals.eventStream = this;
    res.once('close', () => clearInterval(this.keepalive));
  }

  /** The stream of a response, if its route opened one. */
  static of(res: Response): EventStream | undefined {
    return res.locals.eventStream as EventStream | undefined;
  }

  get opened(): boolean {
    return this.res.headersSent;
  }

  /** One event; a client that has left gets nothing more. */
  send(event: string, data: unknown): void {
    if (this.res.writableEnded || this.res.destroyed) return;
    if (!this.opened) this.open();
    // JSON has no raw line breaks, so the data is one `data:` line.
    this.res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  /** The last event, then the end of the stream. */
  close(event: string, data: unknown): void {
    this.send(event, data);
    clearInterval(this.keepalive);
    if (!this.res.writableEnded) this.res.end();
  }

  private open(): void {
    this.res.status(200);
    this.res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    this.res.setHeader('Cache-Control', 'no-cache, no-transform');
    this.res.setHeader('X-Accel-Buffering', 'no'); // nginx and others: pass each event on as it comes
    this.res.flushHeaders();
    this.keepalive = setInterval(() => this.res.write(': keep-alive\n\n'), KEEPALIVE_MS);
    this.keepalive.unref();
  }
}
