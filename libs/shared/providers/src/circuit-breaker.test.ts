import { describe, expect, it } from 'vitest';
import { CircuitBreaker, type CircuitChange, type CircuitPass } from './circuit-breaker.js';

describe('CircuitBreaker', () => {
  it('opens after N consecutive failures, half-opens after the cool-down for one trial, closes on success', () => {
    const changes: CircuitChange[] = [];
    const b = new CircuitBreaker('d1', 3, 1000, (c) => changes.push(c));
    const through = b.acquire(0)!;
    b.failure(through, 0);
    b.success(through, 1);
    b.failure(through, 2);
    b.failure(through, 3);
    expect(b.state).toBe('closed'); // the success in between reset the count
    b.failure(through, 4);
    expect(b.state).toBe('open');
    expect(b.available(500)).toBe(false);
    expect(b.acquire(500)).toBeUndefined();
    expect(b.available(1004)).toBe(true);
    const trial = b.acquire(1004)!;
    expect(trial.trial).toBe(true);
    expect(b.state).toBe('half_open');
    // One trial at a time.
    expect(b.available(1005)).toBe(false);
    expect(b.acquire(1005)).toBeUndefined();
    b.success(trial, 1100);
    expect(b.state).toBe('closed');
    expect(changes.map((c) => `${c.from}>${c.to}`)).toEqual(['closed>open', 'open>half_open', 'half_open>closed']);
  });

  it('re-opens when the half-open trial fails, and a released trial frees the slot', () => {
    const b = new CircuitBreaker('d2', 1, 100, () => {});
    b.failure(b.acquire(0)!, 0);
    b.release(b.acquire(100)!);
    const trial = b.acquire(101)!;
    expect(trial).toBeDefined();
    b.failure(trial, 150);
    expect(b.state).toBe('open');
    expect(b.snapshot()).toEqual({ deploymentId: 'd2', state: 'open', consecutiveFailures: 2, openedAt: 150 });
    expect(b.acquire(200)).toBeUndefined();
    expect(b.acquire(250)).toBeDefined();
  });

  it('a first token closes a half-open circuit, but replies cut after it still open the circuit', () => {
    const b = new CircuitBreaker('d3', 3, 100, () => {});
    // Every reply starts, then is cut: the first token resets nothing.
    for (let i = 0; i < 3; i++) {
      const pass = b.acquire(i)!;
      b.responded(pass, i);
      b.failure(pass, i);
    }
    expect(b.state).toBe('open');
    const trial = b.acquire(200)!;
    b.responded(trial, 201);
    expect(b.state).toBe('closed'); // traffic goes on while the trial's reply streams
    expect(b.acquire(202)).toBeDefined();
    // The trial's reply is cut as well: the count was never reset, so the circuit opens again.
    b.failure(trial, 300);
    expect(b.state).toBe('open');
  });

  it('only the trial frees the half-open slot: a request let through while closed does not', () => {
    const b = new CircuitBreaker('d4', 1, 100, () => {});
    const early: CircuitPass = b.acquire(0)!;
    b.failure(b.acquire(1)!, 1);
    expect(b.state).toBe('open');
    const trial = b.acquire(150)!;
    expect(trial.trial).toBe(true);
    // The request from before the circuit opened ends (cancelled, or a 400) while the trial runs.
    b.release(early);
    expect(b.acquire(151)).toBeUndefined();
    b.failure(early, 152);
    expect(b.state).toBe('half_open'); // its late failure counts, but the trial decides
    expect(b.acquire(153)).toBeUndefined();
    b.success(trial, 160);
    expect(b.state).toBe('closed');
  });
});
