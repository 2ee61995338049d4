import { Router, type Request, type Response } from 'express';
import { contextOf } from './context.js';
import type { ExecuteRequest, ExecutionResponse, RunPythonFileRequest, SaveAndExecuteRequest } from '../contract/contract.js';
import type { ExecutionContext, ExecutionService } from '../execution/execution-service.js';

/**
 * POST /execute, /save-and-execute, /run-python-file. Bodies arrive validated against openapi.yaml;
 * each route hands the body to the service and sends back the envelope it builds.
 */
export function executionRoutes(service: ExecutionService): Router {
  const router = Router();
  const route = <B>(
    path: string,
    call: (body: B, ctx: ExecutionContext) => Promise<ExecutionResponse>,
  ) => {
    router.post(path, async (req: Request, res: Response) => {
      res.json(await call(req.body as B, contextOf(res, path)));
    });
  };
  route<ExecuteRequest>('/execute', (body, ctx) => service.execute(body, ctx));
  route<SaveAndExecuteRequest>('/save-and-execute', (body, ctx) => service.saveAndExecute(body, ctx));
  route<RunPythonFileRequest>('/run-python-file', (body, ctx) => service.runFile(body, ctx));
  return router;
}
