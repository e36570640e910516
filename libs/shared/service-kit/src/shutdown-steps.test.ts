import { describe, expect, it } from 'vitest';
import { LogCapture } from './testing';
import { createServiceApp } from './app';
import { closeStep, timedStep } from './shutdown-steps';

describe('close steps', () => {
  it('are timed and logged by name, show as running while they run, and run last registered first (as Fastify runs onClose hooks)', async () => {
    const logs = new LogCapture();
    const app = await createServiceApp({ service: 'kit-test', logLevel: 'debug', logStream: logs, defaultMetrics: false });
    const seen: Array<Array<{ step: string }>> = [];
    closeStep(app, 'first', async () => {
      await timedStep(app, 'first: part', async () => {
        seen.push(app.shutdownSteps.running().map(({ step }) => ({ step })));
        await new Promise((resolve) => setTimeout(resolve, 20));
      });
    });
    closeStep(app, 'second', async () => {
      seen.push(app.shutdownSteps.running().map(({ step }) => ({ step })));
      throw new Error('could not close');
    });
    await app.ready();
    await expect(app.close()).rejects.toThrow('could not close');
    expect(seen).toEqual([[{ step: 'second' }], [{ step: 'first' }, { step: 'first: part' }]]);
    expect(app.shutdownSteps.running()).toEqual([]);
    const ended = logs.lines.filter((l) => l.msg === 'shutdown step ended');
    expect(ended.map((l) => [l.step, l.failed])).toEqual([
      ['second', true],
      ['first: part', false],
      ['first', false],
    ]);
    expect(ended[1]!.ms).toBeGreaterThanOrEqual(15);
  });
});
