export { startServiceProcess, stopProcess, waitReady, type ServiceProcess } from './processes';
export { ROOT, SERVICES, ALL_SERVICES, type Service, type BackendService } from './paths';
export { freePort } from './ports';
export { startKafka } from './infra';
