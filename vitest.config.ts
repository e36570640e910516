import { defineConfig } from 'vitest/config';

// One run over every project's tests, sharing one set of real infrastructure (see
// tools/dev-stack/src/vitest-global-setup.ts). `nx test <project>` runs the same config filtered
// to that project's folder.
export default defineConfig({
  test: {
    include: ['{apps,libs,tools}/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**', 'tools/bench/**'],
    globalSetup: ['tools/dev-stack/src/vitest-global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
