import { runService, startProcess } from '@vivier/service-kit';
import { loadAdminConfig } from './config';
import { buildAdminApp } from './app';

startProcess(async () => {
  const config = loadAdminConfig();
  const app = await buildAdminApp(config);
  await runService(app, {
    service: 'admin',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
  });
});
