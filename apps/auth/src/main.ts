import { runService, startProcess } from '@vivier/service-kit';
import { loadAuthConfig } from './config';
import { buildAuthApp } from './app';

startProcess(async () => {
  const config = loadAuthConfig();
  const app = await buildAuthApp(config);
  await runService(app, {
    service: 'auth',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
  });
});
