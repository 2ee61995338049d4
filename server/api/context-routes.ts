import { Router } from 'express';
import { contextOf } from './context.js';
import type { CreateContextRequest } from '../contract/contract.js';
import type { ContextService } from '../contexts/context-service.js';

/** POST/GET /contexts, GET/DELETE /contexts/{context_id}: the caller's own contexts only. */
export function contextRoutes(contexts: ContextService): Router {
  const router = Router();
  router.post('/contexts', async (req, res) => {
    const body = (req.body ?? {}) as CreateContextRequest;
    res.status(201).json(await contexts.create(body, contextOf(res, '/contexts')));
  });
  router.get('/contexts', (_req, res) => {
    res.json({ contexts: contexts.list(res.locals.tenant as string) });
  });
  router.get('/contexts/:context_id', (req, res) => {
    res.json(contexts.get(req.params.context_id!, res.locals.tenant as string));
  });
  router.delete('/contexts/:context_id', (req, res) => {
    contexts.delete(req.params.context_id!, res.locals.tenant as string);
    res.status(204).end();
  });
  return router;
}
