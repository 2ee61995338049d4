import type { IncomingMessage } from 'node:http';
import { ServiceError } from '../errors.js';

/**
 * A request's raw body as it arrives, for uploads that go to disk rather than into memory. Like a
 * JSON body (json-body.ts) it must all arrive within BODY_TIMEOUT_S, else 408; a client that leaves
 * halfway is `client_closed`. Whoever stops reading early answers with `Connection: close`, so the
 * rest of the body is never read.
 */
export async function* rawBody(req: IncomingMessage, bodyTimeoutS: number): AsyncGenerator<Buffer> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(
      () => reject(new ServiceError('request_timeout', `The request body did not arrive within ${bodyTimeoutS} s (BODY_TIMEOUT_S)`)),
      bodyTimeoutS * 1000,
    );
  });
  late.catch(() => undefined);
  // Not `for await`: leaving that loop destroys the request, and its socket with the answer.
  const chunks = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  try {
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await Promise.race([chunks.next(), late]);
      } catch (err) {
        if (err instanceof ServiceError) throw err;
        throw new ServiceError('client_closed', 'The client went away before the body arrived');
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    clearTimeout(timer);
  }
}
