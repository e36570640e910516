import { ESLint } from 'eslint';
import { createProjectGraphAsync } from '@nx/devkit';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '@vivier/dev-stack';

// The boundaries are real only if lint fails on a violation. These fixtures are linted as if they
// were files of the named project (nothing is written to disk).
describe('module boundaries', () => {
  let eslint: ESLint;
  beforeAll(async () => {
    // The nx rule reads the cached project graph and silently skips itself without one.
    await createProjectGraphAsync({ exitOnError: false });
    eslint = new ESLint({ cwd: ROOT });
  }, 60_000);

  async function violations(filePath: string, code: string): Promise<string[]> {
    const [result] = await eslint.lintText(code, { filePath: `${ROOT}/${filePath}` });
    return result!.messages.filter((m) => m.ruleId === '@nx/enforce-module-boundaries').map((m) => m.message);
  }

  it('stops a service importing another service schema library', async () => {
    const found = await violations('apps/auth/src/fixture.ts', "import { chatTables } from '@vivier/db-chat';\nexport const t = chatTables;\n");
    expect(found).toEqual([expect.stringContaining('"scope:auth" can only depend on libs tagged with "scope:auth", "scope:shared"')]);
  });

  it('stops the gateway importing any schema library', async () => {
    const found = await violations('apps/gateway/src/fixture.ts', "import { authTables } from '@vivier/db-auth';\nexport const t = authTables;\n");
    expect(found.length).toBe(1);
  });

  it('stops an app importing another app', async () => {
    const found = await violations('apps/gateway/src/fixture.ts', "import { buildChatApp } from '@vivier/chat';\nexport const t = buildChatApp;\n");
    expect(found).toEqual([expect.stringContaining('"type:app" can only depend on libs tagged with "type:lib", "type:db"')]);
  });

  it('stops a shared library importing a schema library', async () => {
    const found = await violations('libs/shared/messaging/src/fixture.ts', "import { chatTables } from '@vivier/db-chat';\nexport const t = chatTables;\n");
    expect(found.length).toBeGreaterThan(0);
  });

  it('lets a service import its own schema library and shared libraries', async () => {
    const found = await violations(
      'apps/chat/src/fixture.ts',
      "import { chatTables } from '@vivier/db-chat';\nimport { problems } from '@vivier/service-kit';\nexport const t = [chatTables, problems];\n",
    );
    expect(found).toEqual([]);
  });
});
