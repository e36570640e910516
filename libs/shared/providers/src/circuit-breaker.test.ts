import { describe, expect, it } from 'vitest';
import { CircuitBreaker, type CircuitChange } from './circuit-breaker.js';

describe('CircuitBreaker', () => {
  it('opens after N consecutive failures, half-opens after the cool-down for one trial, closes on success', () => {
    const changes: CircuitChange[] = [];
    const b = new CircuitBreaker('d1', 3, 1000, (c) => changes.push(c));
    b.failure(0);
    b.success(1);
    b.failure(2);
    b.failure(3);
    expect(b.state).toBe('closed'); // the success in between reset the count
    b.failure(4);
    expect(b.state).toBe('open');
    expect(b.available(500)).toBe(false);
    expect(b.tryAcquire(500)).toBe(false);
    expect(b.available(1004)).toBe(true);
    expect(b.tryAcquire(1004)).toBe(true);
    expect(b.state).toBe('half_open');
    // One trial at a time.
    expect(b.available(1005)).toBe(false);
    expect(b.tryAcquire(1005)).toBe(false);
    b.success(1100);
    expect(b.state).toBe('closed');
    expect(changes.map((c) => `${c.from}>${c.to}`)).toEqual([
      'closed>open',
      'open>half_open',
      'half_open>closed',
    ]);
  });

  it('re-opens when the half-open trial fails, and a released trial frees the slot', () => {
    const b = new CircuitBreaker('d2', 1, 100, () => {});
    b.failure(0);
    expect(b.tryAcquire(100)).toBe(true);
    b.release();
    expect(b.tryAcquire(101)).toBe(true);
    b.failure(150);
    expect(b.state).toBe('open');
    expect(b.snapshot()).toEqual({
      deploymentId: 'd2',
      state: 'open',
      consecutiveFailures: 2,
      openedAt: 150,
    });
    expect(b.tryAcquire(200)).toBe(false);
    expect(b.tryAcquire(250)).toBe(true);
  });
});
