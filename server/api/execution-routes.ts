import { Router, type Request, type Response } from 'express';
import { contextOf } from './context.js';
import { EventStream } from './event-stream.js';
import type { ExecuteRequest, ExecutionResponse, RunPythonFileRequest, SaveAndExecuteRequest } from '../contract/contract.js';
import type { ExecutionService } from '../execution/execution-service.js';
import type { ExecutionContext } from '../execution/run-deps.js';

/** Whether the client asked for the output as it happens: text/event-stream preferred over JSON. */
const wantsEvents = (req: Request) => req.accepts(['application/json', 'text/event-stream']) === 'text/event-stream';

/**
 * POST /execute, /save-and-execute, /run-python-file. Bodies arrive validated against openapi.yaml;
 * each route hands the body to the service and sends back the envelope it builds: as JSON, or as
 * Server-Sent Events (the output while it runs, then the envelope) when the client asks for them.
 */
export function executionRoutes(service: ExecutionService): Router {
  const router = Router();
  const route = <B>(
    path: string,
    call: (body: B, ctx: ExecutionContext) => Promise<ExecutionResponse>,
  ) => {
    router.post(path, async (req: Request, res: Response) => {
      const ctx = contextOf(res, path);
      if (!wantsEvents(req)) {
        res.json(await call(req.body as B, ctx));
        return;
      }
      const events = new EventStream(res);
      const envelope = await call(req.body as B, { ...ctx, onOutput: (stream, text) => events.send(stream, { text }) });
      events.close('result', envelope);
    });
  };
  route<ExecuteRequest>('/execute', (body, ctx) => service.execute(body, ctx));
  route<SaveAndExecuteRequest>('/save-and-execute', (body, ctx) => service.saveAndExecute(body, ctx));
  route<RunPythonFileRequest>('/run-python-file', (body, ctx) => service.runFile(body, ctx));
  return router;
}
