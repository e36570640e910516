import { runService, startProcess, startTracing } from '@vivier/service-kit';
import { loadGatewayConfig } from './config';
import { buildGatewayApp } from './app';

startProcess(async () => {
  // Before the app is built, so its first request and record are traced (OTEL_* variables).
  startTracing('gateway');
  const config = loadGatewayConfig();
  const app = await buildGatewayApp(config);
  await runService(app, {
    service: 'gateway',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
  });
});
