import { hostileCorpus } from '../helpers/hostile.js';

hostileCorpus('runc');
