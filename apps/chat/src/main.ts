import { runService, startProcess, startTracing } from '@vivier/service-kit';
import { loadChatConfig } from './config';
import { buildChatApp } from './app';

startProcess(async () => {
  // Before the app is built, so its first request and record are traced (OTEL_* variables).
  startTracing('chat');
  const config = loadChatConfig();
  const app = await buildChatApp(config);
  await runService(app, {
    service: 'chat',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
  });
});
