// One circuit per deployment: after `threshold` consecutive failures it opens and the router
// stops sending traffic there; after `cooldownMs` it lets exactly one trial request through
// (half-open); that trial's first token closes it, its failure opens it again for another
// cool-down. A reply cut after its first token counts as a failure; only a reply that ends well
// resets the count.

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

/**
 * What `acquire` hands out: given back with the outcome, so only the request that holds the
 * half-open trial can free it (a request let through while closed, ending while half-open, does not).
 */
export interface CircuitPass {
  readonly trial: boolean;
}

const THROUGH: CircuitPass = Object.freeze({ trial: false });

export class CircuitBreaker {
  private current: CircuitState = 'closed';
  private failures = 0;
  private openedAt = 0;
  private trial: CircuitPass | undefined;

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
    return this.trial === undefined;
  }

  /** The right to send one request, or undefined; in half-open only one holder at a time (the trial). */
  acquire(now = Date.now()): CircuitPass | undefined {
    if (this.current === 'closed') return THROUGH;
    if (this.current === 'open') {
      if (now - this.openedAt < this.cooldownMs) return undefined;
      this.move('half_open', now);
    }
    if (this.trial) return undefined;
    this.trial = { trial: true };
    return this.trial;
  }

  /**
   * The deployment answered (a first token): a half-open trial closes the circuit, so traffic
   * does not wait for the whole reply. The count of consecutive failures is not reset: only a
   * reply that ends well does that, so a deployment that cuts every reply opens the circuit.
   */
  responded(pass: CircuitPass, now = Date.now()): void {
    if (pass !== this.trial) return;
    this.trial = undefined;
    if (this.current !== 'closed') this.move('closed', now);
  }

  /** A reply ended well. */
  success(pass: CircuitPass, now = Date.now()): void {
    this.failures = 0;
    if (pass === this.trial || this.current !== 'closed') this.trial = undefined;
    if (this.current !== 'closed') this.move('closed', now);
  }

  failure(pass: CircuitPass, now = Date.now()): void {
    this.failures++;
    const wasTrial = pass === this.trial;
    if (wasTrial) this.trial = undefined;
    if ((this.current === 'half_open' && wasTrial) || (this.current === 'closed' && this.failures >= this.threshold)) {
      this.openedAt = now;
      this.move('open', now);
    }
  }

  /** The request ended without telling anything about the deployment's health (cancelled, 400). */
  release(pass: CircuitPass): void {
    if (pass === this.trial) this.trial = undefined;
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
