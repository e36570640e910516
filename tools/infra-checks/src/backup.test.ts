import { accessSync, constants, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fromRoot } from './paths';
import { findTool, run } from './support';

// The backup scripts' contract; the restore drill (write, back up, wipe, restore, resume) is its
// own test. Here: they parse, refuse to run without what they need, and say so.

const BACKUP = fromRoot('infra/backup/backup.sh');
const RESTORE = fromRoot('infra/backup/restore.sh');
const S3 = fromRoot('infra/backup/s3.mjs');
const clean = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };

describe('infra/backup', () => {
  it('scripts are executable bash that parses', async () => {
    for (const script of [BACKUP, RESTORE]) {
      expect(() => accessSync(script, constants.X_OK), script).not.toThrow();
      expect(readFileSync(script, 'utf8')).toMatch(/^#!\/usr\/bin\/env bash\n[\s\S]*set -euo pipefail/);
      const result = await run('bash', ['-n', script]);
      expect(result.code, result.stderr).toBe(0);
    }
  });

  it.runIf(findTool('shellcheck'))('pass shellcheck', async () => {
    const result = await run(findTool('shellcheck')!, ['-S', 'warning', BACKUP, RESTORE]);
    expect(result.code, result.stdout).toBe(0);
  });

  it('backup.sh needs BACKUP_S3_URI and knows the four schemas', async () => {
    const missing = await run('bash', [BACKUP], { env: clean });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('set BACKUP_S3_URI');
    const wrong = await run('bash', [BACKUP, 'gateway'], { env: { ...clean, BACKUP_S3_URI: 's3://bucket/prefix' } });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/unknown service 'gateway'|pg_dump not found/);
  });

  it('restore.sh needs a backup to restore from, the S3 location and an admin connection', async () => {
    const usage = await run('bash', [RESTORE], { env: clean });
    expect(usage.code).toBe(1);
    expect(usage.stderr).toContain('usage: restore.sh --from latest|<stamp>');
    const noAdmin = await run('bash', [RESTORE, '--from', 'latest'], { env: { ...clean, BACKUP_S3_URI: 's3://bucket/prefix' } });
    expect(noAdmin.stderr).toContain('set ADMIN_DATABASE_URL');
    const badStamp = await run('bash', [RESTORE, '--from', 'yesterday', '--yes'], {
      env: { ...clean, BACKUP_S3_URI: 's3://bucket/prefix', ADMIN_DATABASE_URL: 'postgres://nobody@127.0.0.1:1/x' },
    });
    expect(badStamp.code).toBe(1);
    expect(badStamp.stderr).toContain('not a backup stamp: yesterday');
  });

  it('s3.mjs explains its usage and refuses what is not an s3:// URI', async () => {
    const node = process.execPath;
    const usage = await run(node, [S3, 'copy', 's3://bucket/key']);
    expect(usage.code).toBe(1);
    expect(usage.stderr).toContain('usage: s3.mjs put|get|ls');
    const notS3 = await run(node, [S3, 'get', 'https://example.com/x', '/dev/null']);
    expect(notS3.stderr).toContain('not an s3:// URI');
  });
});
