#!/usr/bin/env node
// Bundles one app into a self-contained folder: `node tools/build/bundle.mjs <app> [--out dist]`.
//
//   dist/<app>/main.js        the service (esbuild bundle: every workspace library and every npm
//                             package the app imports, except EXTERNAL below), with shared
//                             chunk-*.js files and source maps beside it
//   dist/<app>/<name>.js      every other process its package.json scripts start from
//                             src/<name>.ts: migrate.js (auth, chat, admin, worker), rotate-keys.js
//   dist/<app>/migrations/    libs/db/<app>/migrations (drizzle-kit SQL + meta/_journal.json)
//   dist/<app>/node_modules/  only the external packages and their dependency closure, copied from
//                             the installed tree at the versions package-lock.json resolved
//   dist/<app>/package.json   {"type":"module"} and the external packages with those versions
//
// The image (infra/docker/Dockerfile) copies that folder and nothing else; the same folder runs
// on a developer machine with `node dist/<app>/main.js`, which is how tools/infra-checks proves
// it self-contained.
//
// Migrations: @vivier/db-<app> finds its folder with `new URL('../migrations', import.meta.url)`,
// relative to libs/db/<app>/src/index.ts. Bundled, import.meta.url is the bundle file, so this
// script rewrites that one expression to `new URL('./migrations', import.meta.url)` while bundling
// (and fails if the expression is no longer there), and copies the folder next to the bundle.
// Set VIVIER_MIGRATIONS_DIR to run the migrations from another folder.
import { build } from 'esbuild';
import { cp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const APPS = ['gateway', 'auth', 'chat', 'admin', 'worker'];
export const APPS_WITH_MIGRATIONS = ['auth', 'chat', 'admin', 'worker'];

/**
 * Packages left out of the bundle, and why. Their import stays an import, resolved at run time
 * from dist/<app>/node_modules, where they are copied with their dependencies.
 *
 * OpenTelemetry: instrumentations that patch a package while it loads (pg, ioredis, kafkajs,
 * fastify…) cannot see one that is bundled. When the service kit starts the SDK with such
 * instrumentations, list those packages here (and load the SDK's ESM hook with --import), or the
 * spans of the bundled images will silently lack them.
 */
export const EXTERNAL = {
  // Native addon: the package picks a prebuilt binary from a platform package at run time.
  '@node-rs/argon2': 'native addon (platform packages as optional dependencies)',
  // Optional peers required inside try/catch; not installed, and must stay a runtime lookup.
  'pg-native': 'optional native driver of pg (pg falls back to JavaScript)',
  'pg-cloudflare': 'optional dependency of pg for Cloudflare Workers',
  bufferutil: 'optional native speed-up of ws',
  'utf-8-validate': 'optional native speed-up of ws',
  snappy: 'optional kafkajs compression codec, registered by the app if ever used',
  'kafkajs-snappy': 'optional kafkajs compression codec',
  lz4: 'optional kafkajs compression codec',
  // Serves files from its own package folder (the Swagger UI assets) by path.
  '@fastify/swagger-ui': 'serves static assets from its package folder',
};

const BANNER = [
  "import { createRequire as __vivierCreateRequire } from 'node:module';",
  "import { fileURLToPath as __vivierFileURLToPath } from 'node:url';",
  "import { dirname as __vivierDirname } from 'node:path';",
  'const require = __vivierCreateRequire(import.meta.url);',
  'const __filename = __vivierFileURLToPath(import.meta.url);',
  'const __dirname = __vivierDirname(__filename);',
].join('\n');

const MIGRATIONS_EXPRESSION = "new URL('../migrations', import.meta.url)";
const MIGRATIONS_REPLACEMENT =
  "(process.env.VIVIER_MIGRATIONS_DIR ? new URL('file://' + require('node:path').resolve(process.env.VIVIER_MIGRATIONS_DIR) + '/') : new URL('./migrations', import.meta.url))";

/** Rewrites the migrations folder of libs/db/<service>/src/index.ts to the bundle's own folder. */
const migrationsPlugin = {
  name: 'vivier-migrations-folder',
  setup(b) {
    b.onLoad({ filter: /[\\/]libs[\\/]db[\\/][^\\/]+[\\/]src[\\/]index\.ts$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      if (!source.includes(MIGRATIONS_EXPRESSION)) {
        return {
          errors: [
            {
              text: `${path.relative(ROOT, args.path)} no longer contains ${MIGRATIONS_EXPRESSION}; update tools/build/bundle.mjs`,
            },
          ],
        };
      }
      return { contents: source.split(MIGRATIONS_EXPRESSION).join(MIGRATIONS_REPLACEMENT), loader: 'ts' };
    });
  },
};

function isExternal(specifier) {
  return Object.keys(EXTERNAL).some((name) => specifier === name || specifier.startsWith(`${name}/`));
}

const packageNameOf = (specifier) =>
  specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0];

/**
 * The lock's entries (node_modules/... paths) that the external packages need at run time:
 * each package, then its dependencies and installed optional dependencies, resolved the way Node
 * resolves them (nearest node_modules upwards).
 */
export function runtimeClosure(lock, roots, fromDirs = ['']) {
  const packages = lock.packages ?? {};
  // The folder Node looks in next: node_modules/a/node_modules/b -> node_modules/a -> (root).
  const parentOf = (dir) => {
    if (dir === '') return undefined;
    const cut = dir.lastIndexOf('/node_modules/');
    return cut === -1 ? '' : dir.slice(0, cut);
  };
  const resolve = (from, name) => {
    for (let dir = from; dir !== undefined; dir = parentOf(dir)) {
      const candidate = dir ? `${dir}/node_modules/${name}` : `node_modules/${name}`;
      if (packages[candidate]) return candidate;
    }
    return undefined;
  };
  const closure = new Map();
  const missing = [];
  const visit = (from, name, optional) => {
    const key = resolve(from, name);
    if (!key) {
      if (!optional) missing.push(`${name} (needed by ${from || 'the bundle'})`);
      return;
    }
    if (closure.has(key)) return;
    const entry = packages[key];
    if (entry.link) {
      missing.push(`${name} is a workspace package; bundle it instead of leaving it external`);
      return;
    }
    closure.set(key, entry);
    for (const dep of Object.keys(entry.dependencies ?? {})) visit(key, dep, false);
    for (const dep of Object.keys(entry.optionalDependencies ?? {})) visit(key, dep, true);
    for (const dep of Object.keys(entry.peerDependencies ?? {})) {
      if (!entry.peerDependenciesMeta?.[dep]?.optional) visit(key, dep, false);
    }
  };
  for (const name of roots) {
    const from = fromDirs.find((dir) => resolve(dir, name)) ?? '';
    visit(from, name, true);
  }
  return { closure, missing };
}

async function exists(file) {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * main.ts, and every other process the app's package.json scripts start (`node --import tsx
 * src/<name>.ts`: migrate, rotate-keys, ...), each bundled as <name>.js.
 */
export async function entryPointsOf(app) {
  const manifest = JSON.parse(await readFile(path.join(ROOT, 'apps', app, 'package.json'), 'utf8'));
  const entryPoints = { main: path.join(ROOT, 'apps', app, 'src', 'main.ts') };
  for (const script of Object.values(manifest.scripts ?? {})) {
    const match = /^node (?:--import tsx )?src\/([\w-]+)\.ts$/.exec(script);
    if (match) entryPoints[match[1]] = path.join(ROOT, 'apps', app, 'src', `${match[1]}.ts`);
  }
  if (APPS_WITH_MIGRATIONS.includes(app) && !entryPoints.migrate) {
    throw new Error(`apps/${app}/package.json has no "migrate" script running src/migrate.ts`);
  }
  return entryPoints;
}

export async function bundleApp(app, options = {}) {
  if (!APPS.includes(app)) throw new Error(`unknown app ${JSON.stringify(app)}; one of ${APPS.join(', ')}`);
  const outRoot = path.resolve(ROOT, options.outDir ?? 'dist');
  const outDir = path.join(outRoot, app);
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });

  const entryPoints = await entryPointsOf(app);

  const usedExternals = new Set();
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints,
    outdir: outDir,
    bundle: true,
    splitting: true,
    // Shared chunks sit next to the entries: the migrations folder is found relative to whichever
    // file holds @vivier/db-<app>.
    chunkNames: '[name]-[hash]',
    platform: 'node',
    target: 'node22',
    format: 'esm',
    sourcemap: 'linked',
    sourcesContent: false,
    minifySyntax: true,
    legalComments: 'eof',
    logLevel: 'silent',
    metafile: true,
    banner: { js: BANNER },
    plugins: [
      migrationsPlugin,
      {
        name: 'vivier-externals',
        setup(b) {
          b.onResolve({ filter: /^[^./]/ }, (args) => {
            if (args.path.startsWith('node:') || !isExternal(args.path)) return undefined;
            usedExternals.add(packageNameOf(args.path));
            return { path: args.path, external: true };
          });
        },
      },
    ],
  });
  for (const warning of result.warnings) {
    process.stderr.write(`bundle ${app}: warning: ${warning.text}${warning.location ? ` (${warning.location.file})` : ''}\n`);
  }

  // The external packages and their closure, copied at the versions the lock resolved.
  const lock = JSON.parse(await readFile(path.join(ROOT, 'package-lock.json'), 'utf8'));
  const { closure, missing } = runtimeClosure(lock, [...usedExternals].sort(), [`apps/${app}`, '']);
  if (missing.length > 0) throw new Error(`bundle ${app}: cannot resolve runtime packages: ${missing.join('; ')}`);
  const dependencies = {};
  const copied = [];
  for (const [key, entry] of closure) {
    const source = path.join(ROOT, key);
    if (!(await exists(source))) {
      // An optional dependency for another platform (the lock lists every platform package).
      if (entry.optional) continue;
      throw new Error(`bundle ${app}: ${key} is in package-lock.json but not installed; run npm ci`);
    }
    const target = path.join(outDir, key.replace(/^(apps\/[^/]+\/)/, ''));
    await cp(source, target, {
      recursive: true,
      dereference: true,
      filter: (file) => !path.relative(source, file).split(path.sep).includes('node_modules'),
    });
    copied.push(key);
  }
  for (const name of usedExternals) {
    const key = [...closure.keys()].find((k) => k === `node_modules/${name}` || k.endsWith(`/node_modules/${name}`));
    if (key && copied.includes(key)) dependencies[name] = closure.get(key).version;
  }
  await writeFile(
    path.join(outDir, 'package.json'),
    `${JSON.stringify({ name: `@vivier/${app}-bundle`, private: true, type: 'module', dependencies }, null, 2)}\n`,
  );

  if (APPS_WITH_MIGRATIONS.includes(app)) {
    await cp(path.join(ROOT, 'libs', 'db', app, 'migrations'), path.join(outDir, 'migrations'), { recursive: true });
  }

  const inputs = Object.keys(result.metafile.inputs);
  return {
    app,
    outDir,
    entries: Object.keys(entryPoints).map((name) => path.join(outDir, `${name}.js`)),
    externals: dependencies,
    runtimePackages: copied,
    bundledPackages: [...new Set(inputs.filter((i) => i.includes('node_modules/')).map((i) => packageNameOf(i.split('node_modules/').pop())))].sort(),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const outIndex = args.indexOf('--out');
  const outDir = outIndex === -1 ? undefined : args[outIndex + 1];
  const apps = args.filter((a, i) => !a.startsWith('--') && (outIndex === -1 || i !== outIndex + 1));
  if (apps.length === 0) {
    process.stderr.write(`usage: node tools/build/bundle.mjs <${APPS.join('|')}|all>... [--out dist]\n`);
    process.exit(64);
  }
  try {
    for (const app of apps.includes('all') ? APPS : apps) {
      const started = Date.now();
      const summary = await bundleApp(app, { outDir });
      const externals = Object.entries(summary.externals).map(([n, v]) => `${n}@${v}`).join(', ') || 'none';
      process.stdout.write(
        `${app}: ${path.relative(ROOT, summary.outDir)} in ${Date.now() - started} ms; external: ${externals}; ` +
          `${summary.runtimePackages.length} runtime package(s)\n`,
      );
    }
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
}
