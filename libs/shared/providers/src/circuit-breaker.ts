// One circuit per deployment: after `threshold` consecutive failures it opens and the router
// stops sending traffic there; after `cooldownMs` it lets exactly one trial request through
// (half-open); that trial's success closes it, its failure opens it again for another cool-down.

export type CircuitState = 'closed' | 'open' | 'half_open';

export interface CircuitSnapshot {
  deploymentId: string;
  state: CircuitState;
  consecutiveFailures: number;
  /** Epoch ms when it last opened. */
  openedAt?: number;
}

export interface CircuitChange {
  deploymentId: string;
  from: CircuitState;
  to: CircuitState;
  at: number;
}

export class CircuitBreaker {
  private current: CircuitState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private trialInFlight = false;

  constructor(
    readonly deploymentId: string,
    private readonly threshold: number,
    private readonly cooldownMs: number,
    private readonly onChange: (change: CircuitChange) => void,
  ) {}

  get state(): CircuitState {
    return this.current;
  }

  /** Could a request be sent now? (Does not take the half-open trial slot.) */
  available(now = Date.now()): boolean {
    if (this.current === 'closed') return true;
    if (this.current === 'open') return now - this.openedAt >= this.cooldownMs;
    return !this.trialInFlight;
  }

  /** Claims the right to send one request; in half-open only one holder at a time. */
  tryAcquire(now = Date.now()): boolean {
    if (this.current === 'closed') return true;
    if (this.current === 'open') {
      if (now - this.openedAt < this.cooldownMs) return false;
      this.move('half_open', now);
    }
    if (this.trialInFlight) return false;
    this.trialInFlight = true;
    return true;
  }

  success(now = Date.now()): void {
    this.failures = 0;
    this.trialInFlight = false;
    if (this.current !== 'closed') this.move('closed', now);
  }

  failure(now = Date.now()): void {
    this.failures++;
    this.trialInFlight = false;
    if (this.current === 'half_open' || (this.current === 'closed' && this.failures >= this.threshold)) {
      this.openedAt = now;
      this.move('open', now);
    }
  }

  /** The request ended without telling anything about the deployment's health (cancelled, 400). */
  release(): void {
    this.trialInFlight = false;
  }

  snapshot(): CircuitSnapshot {
    return {
      deploymentId: this.deploymentId,
      state: this.current,
      consecutiveFailures: this.failures,
      ...(this.openedAt > 0 ? { openedAt: this.openedAt } : {}),
    };
  }

  private move(to: CircuitState, at: number): void {
    const from = this.current;
    this.current = to;
    try {
      this.onChange({ deploymentId: this.deploymentId, from, to, at });
    } catch {
      // A metrics hook must never break routing.
    }
  }
}
