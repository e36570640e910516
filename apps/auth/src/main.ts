import { runService, startProcess, startTracing } from '@vivier/service-kit';
import { loadAuthConfig } from './config';
import { buildAuthApp } from './app';

startProcess(async () => {
  // Before the app is built, so its first request and record are traced (OTEL_* variables).
  startTracing('auth');
  const config = loadAuthConfig();
  const app = await buildAuthApp(config);
  await runService(app, {
    service: 'auth',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
  });
});
