import { runService, startProcess } from '@vivier/service-kit';
import { loadWorkerConfig } from './config';
import { buildWorkerApp } from './app';

startProcess(async () => {
  const config = loadWorkerConfig();
  const app = await buildWorkerApp(config);
  await runService(app, {
    service: 'worker',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
  });
});
