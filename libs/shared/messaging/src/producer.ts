import type { Producer } from 'kafkajs';

const state = new WeakMap<Producer, { connected: boolean; connecting?: Promise<void> }>();

/** Tracks a producer's connection and connects it on demand (kafkajs refuses sends while disconnected). */
export function trackProducer(producer: Producer): void {
  if (state.has(producer)) return;
  const s: { connected: boolean; connecting?: Promise<void> } = { connected: false };
  state.set(producer, s);
  producer.on(producer.events.CONNECT, () => (s.connected = true));
  producer.on(producer.events.DISCONNECT, () => (s.connected = false));
}

export async function ensureConnected(producer: Producer): Promise<void> {
  trackProducer(producer);
  const s = state.get(producer)!;
  if (s.connected) return;
  s.connecting ??= producer.connect().finally(() => {
    s.connecting = undefined;
  });
  await s.connecting;
}
