import { runService, startProcess, startTracing } from '@vivier/service-kit';
import { loadAdminConfig } from './config';
import { buildAdminApp } from './app';

startProcess(async () => {
  // Before the app is built, so its first request and record are traced (OTEL_* variables).
  startTracing('admin');
  const config = loadAdminConfig();
  const app = await buildAdminApp(config);
  await runService(app, {
    service: 'admin',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
  });
});
