import { runService, startProcess } from '@vivier/service-kit';
import { loadGatewayConfig } from './config';
import { buildGatewayApp } from './app';

startProcess(async () => {
  const config = loadGatewayConfig();
  const app = await buildGatewayApp(config);
  await runService(app, {
    service: 'gateway',
    host: config.HOST,
    port: config.PORT,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
  });
});
