import { runService, startProcess, startTracing } from '@vivier/service-kit';
import { loadWorkerConfig } from './config';
import { buildWorkerApp } from './app';

startProcess(async () => {
  // Before the app is built, so its first request and record are traced (OTEL_* variables).
  startTracing('worker');
  const config = loadWorkerConfig();
  const app = await buildWorkerApp(config);
  await runService(app, {
    service: 'worker',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
  });
});
