import { Router } from 'express';
import { contextOf } from './context.js';
import type { CreateContextRequest } from '../contract/contract.js';
import type { Contexts } from '../contexts/context-service.js';

/** POST/GET /contexts, GET/DELETE /contexts/{context_id}: the caller's own contexts only. */
export function contextRoutes(contexts: Contexts): Router {
  const router = Router();
  router.post('/contexts', async (req, res) => {
    const body = (req.body ?? {}) as CreateContextRequest;
    res.status(201).json(await contexts.create(body, contextOf(res, '/contexts')));
  });
  router.get('/contexts', async (_req, res) => {
    res.json({ contexts: await contexts.list(res.locals.tenant as string) });
  });
  router.get('/contexts/:context_id', async (req, res) => {
    res.json(await contexts.get(req.params.context_id!, res.locals.tenant as string));
  });
  router.delete('/contexts/:context_id', async (req, res) => {
    await contexts.delete(req.params.context_id!, res.locals.tenant as string);
    res.status(204).end();
  });
  return router;
}
