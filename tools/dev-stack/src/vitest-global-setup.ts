/**
 * Vitest global setup: starts the test infrastructure once per run, unless the caller already
 * did (VIVIER_TEST_INFRA=1), and exposes it to test workers through the environment.
 */
export default async function setup(): Promise<(() => Promise<void>) | undefined> {
  if (process.env.VIVIER_TEST_INFRA === '1') return undefined;
  const { startTestInfrastructure } = await import('./test-infra');
  const infra = await startTestInfrastructure();
  Object.assign(process.env, infra.env);
  return () => infra.stop();
}
