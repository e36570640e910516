import { ipPartition, type Identity } from '@vivier/service-kit';
import type { Limit, LimitState } from './edge-check.service';

export interface RateLimitSettings {
  enabled: boolean;
  windowSeconds: number;
  perUser: number;
  perIp: number;
  perIpAuthenticated: number;
}

/**
 * The quotas as the IETF RateLimit header fields name them
 * (draft-ietf-httpapi-ratelimit-headers-10/11: `RateLimit-Policy: "user";q=600;w=60`,
 * `RateLimit: "user";r=599;t=1`). Policy strings are built once.
 */
export class RateLimitPolicies {
  readonly anonymousPolicyHeader: string;
  readonly authenticatedPolicyHeader: string;

  constructor(readonly settings: RateLimitSettings) {
    const w = settings.windowSeconds;
    this.anonymousPolicyHeader = `"ip";q=${settings.perIp};w=${w}`;
    this.authenticatedPolicyHeader = `"user";q=${settings.perUser};w=${w}, "ip";q=${settings.perIpAuthenticated};w=${w}`;
  }

  /** The limits one request counts against: the user and the looser per-IP cap, or the per-IP one. */
  limitsFor(identity: Identity | undefined, ip: string): Limit[] {
    const s = this.settings;
    if (!s.enabled) return [];
    const ipKey = ipPartition(ip);
    if (identity === undefined)
      return [{ policy: 'ip', key: ipKey, quota: s.perIp, windowSeconds: s.windowSeconds }];
    return [
      { policy: 'user', key: identity.sub, quota: s.perUser, windowSeconds: s.windowSeconds },
      // A separate bucket from the anonymous one: signing in does not share the login budget.
      { policy: 'ip', key: `a:${ipKey}`, quota: s.perIpAuthenticated, windowSeconds: s.windowSeconds },
    ];
  }

  anonymousLimits(ip: string): Limit[] {
    return this.limitsFor(undefined, ip);
  }

  policyHeader(identity: Identity | undefined): string {
    return identity === undefined ? this.anonymousPolicyHeader : this.authenticatedPolicyHeader;
  }
}

export function rateLimitHeader(states: LimitState[]): string {
  return states.map((s) => `"${s.policy}";r=${s.remaining};t=${s.resetSeconds}`).join(', ');
}
