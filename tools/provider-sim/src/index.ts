export { startProviderSim, DEFAULT_MODELS } from './server.js';
export { SWITCHES as FAULT_HEADERS } from './faults.js';
export { TOKENS_PER_IMAGE, approxTokens, tokenize } from './text.js';
export type {
  AbortRecord,
  Faults,
  ImageRecord,
  Protocol,
  ProviderSim,
  ProviderSimOptions,
  RequestOutcome,
  RequestRecord,
  ServerErrorStatus,
  SimStats,
} from './types.js';
