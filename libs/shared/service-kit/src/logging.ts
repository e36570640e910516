import type { LoggerOptions } from 'pino';
import { activeTraceIds } from './tracing';

/**
 * Paths never written to logs. Tokens, passwords and keys may appear in headers and bodies;
 * pino replaces them before serialising.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
  'req.headers["x-vivier-context"]',
  'req.headers["x-vivier-internal"]',
  'res.headers["set-cookie"]',
  '*.password',
  '*.newPassword',
  '*.refreshToken',
  '*.accessToken',
  '*.apiKey',
  '*.secret',
  '*.token',
  '*.mfaCode',
];

export function loggerOptions(service: string, level: string): LoggerOptions {
  return {
    level,
    base: { service },
    messageKey: 'msg',
    timestamp: () => `,"time":"${new Date().toISOString()}"`,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    // The trace of the work in progress, on every line written inside it (tracing on).
    mixin: () => activeTraceIds() ?? {},
    formatters: { level: (label) => ({ level: label }) },
  };
}
