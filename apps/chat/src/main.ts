import { runService, startProcess } from '@vivier/service-kit';
import { loadChatConfig } from './config';
import { buildChatApp } from './app';

startProcess(async () => {
  const config = loadChatConfig();
  const app = await buildChatApp(config);
  await runService(app, {
    service: 'chat',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
  });
});
