export * from './tables';
export * from './kafka';
export * from './metrics';
export * from './publish';
export * from './relay';
export * from './consumer';
export * from './producer';
export * from './plugin';
