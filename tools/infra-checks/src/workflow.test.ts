import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { APPS, fromRoot } from './paths';
import { readYaml } from './support';

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  if?: string;
  with?: Record<string, string>;
}
interface Job {
  needs?: string | string[];
  if?: string;
  steps: Step[];
  strategy?: { matrix?: Record<string, unknown> };
  outputs?: Record<string, string>;
  permissions?: Record<string, string>;
}
const workflow = readYaml<{ on: Record<string, unknown>; jobs: Record<string, Job> }>(fromRoot('.github/workflows/ci.yml'));

describe('.github/workflows/ci.yml', () => {
  it('lints, typechecks, tests and builds what nx says is affected', () => {
    const runs = workflow.jobs.test!.steps.map((s) => s.run ?? '').join('\n');
    expect(workflow.jobs.test!.steps.some((s) => s.uses?.startsWith('nrwl/nx-set-shas@'))).toBe(true);
    for (const target of ['lint', 'typecheck', 'test', 'build']) expect(runs).toMatch(new RegExp(`nx affected -t [\\w ]*\\b${target}\\b`));
    expect(runs).toContain('npm ci');
    expect(runs).toContain('tools/build/bundle.mjs');
    // `nx affected -t build` builds only projects that have the target: every app has it.
    for (const app of APPS) {
      const scripts = (JSON.parse(readFileSync(fromRoot(`apps/${app}/package.json`), 'utf8')) as { scripts: Record<string, string> }).scripts;
      expect(scripts.build, app).toBe(`node ../../tools/build/bundle.mjs ${app}`);
    }
  });

  it('builds one image per affected app with build-push-action, pushing only outside pull requests', () => {
    const images = workflow.jobs.images!;
    expect(images.needs).toBe('test');
    expect(images.strategy?.matrix?.app).toBe('${{ fromJSON(needs.test.outputs.apps) }}');
    expect(workflow.jobs.test!.outputs?.apps).toBeDefined();
    const build = images.steps.find((s) => s.uses?.startsWith('docker/build-push-action@'))!;
    expect(build).toBeDefined();
    expect(build.with).toMatchObject({
      context: '.',
      file: 'infra/docker/Dockerfile',
      'build-args': 'APP=${{ matrix.app }}',
      push: "${{ github.event_name != 'pull_request' }}",
    });
    const login = images.steps.find((s) => s.uses?.startsWith('docker/login-action@'))!;
    expect(login.if).toBe("github.event_name != 'pull_request'");
    expect(images.permissions?.packages).toBe('write');
    // The tag build's app list names every app.
    const affected = workflow.jobs.test!.steps.find((s) => s.name === 'Affected apps')!.run!;
    for (const app of APPS) expect(affected).toContain(`@vivier/${app}`);
  });
});
