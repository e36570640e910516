import { isDeepStrictEqual } from 'node:util';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { FastifyBaseLogger } from 'fastify';
import { routesTo, type UpstreamName } from '../proxy/upstreams';

/** The parts of an OpenAPI 3.x document the merge touches; everything else is carried as is. */
export interface OpenApiDocument {
  openapi?: string;
  info?: { title?: string; version?: string; description?: string };
  tags?: Array<{ name: string; description?: string }>;
  paths?: Record<string, Record<string, unknown>>;
  components?: Record<string, Record<string, unknown>>;
  security?: Array<Record<string, string[]>>;
  [extension: string]: unknown;
}

export interface OpenApiMergeOptions {
  upstreams: Record<UpstreamName, string>;
  dispatcher: Dispatcher;
  ttlMs: number;
  /** The gateway's own document (its own routes, e.g. /api/v1/health). */
  own: () => OpenApiDocument;
  log: FastifyBaseLogger;
}

const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);
/** A document missing a service is kept only briefly: the service is probably starting. */
const PARTIAL_TTL_MS = 5000;

const BEARER = {
  type: 'http',
  scheme: 'bearer',
  description: 'An access token (JWT from /api/v1/auth/login) or an API key (vk_…).',
};

/** Replaces `#/components/<section>/<name>` references according to `renames`. */
function rewriteRefs(node: unknown, renames: Map<string, string>): unknown {
  if (renames.size === 0 || node === null || typeof node !== 'object') return node;
  if (Array.isArray(node)) return node.map((item) => rewriteRefs(item, renames));
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    out[key] =
      key === '$ref' && typeof value === 'string' && renames.has(value)
        ? renames.get(value)
        : rewriteRefs(value, renames);
  }
  return out;
}

/**
 * One OpenAPI document for the whole public API, built from each service's own
 * `GET /openapi.json` (generated from its route schemas) plus the gateway's own routes:
 * - only the paths the gateway actually forwards to that service (internal routes stay out);
 * - components merged; a name two services use for different schemas gets a service prefix;
 * - one bearer security scheme required everywhere except the public routes;
 * - a service that does not answer is left out and named in `info.description` and
 *   `x-vivier-unavailable-services` instead of failing the whole document.
 * The result is cached for `ttlMs`; concurrent requests share one build.
 */
export class OpenApiMerger {
  private cached: { document: OpenApiDocument; expiresAt: number } | undefined;
  private building: Promise<OpenApiDocument> | undefined;

  constructor(private readonly options: OpenApiMergeOptions) {}

  /** The last built document (refresh() first). */
  get current(): OpenApiDocument | undefined {
    return this.cached?.document;
  }

  async refresh(): Promise<OpenApiDocument> {
    if (this.cached && this.cached.expiresAt > Date.now()) return this.cached.document;
    this.building ??= this.build().finally(() => {
      this.building = undefined;
    });
    return this.building;
  }

  private async fetchDocument(name: UpstreamName): Promise<OpenApiDocument | undefined> {
    try {
      const res = await undiciRequest(`${this.options.upstreams[name]}/openapi.json`, {
        dispatcher: this.options.dispatcher,
        headersTimeout: 2000,
        bodyTimeout: 2000,
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new Error(`answered ${res.statusCode}`);
      }
      return (await res.body.json()) as OpenApiDocument;
    } catch (error) {
      this.options.log.warn({ err: error, service: name }, 'OpenAPI document of a service is unavailable');
      return undefined;
    }
  }

  private async build(): Promise<OpenApiDocument> {
    const names = Object.keys(this.options.upstreams) as UpstreamName[];
    const fetched = await Promise.all(
      names.map(async (name) => [name, await this.fetchDocument(name)] as const),
    );
    const unavailable = fetched.filter(([, doc]) => doc === undefined).map(([name]) => name);

    const merged: OpenApiDocument & {
      paths: Record<string, Record<string, unknown>>;
      components: Record<string, Record<string, unknown>>;
    } = {
      openapi: '3.1.0',
      info: {
        title: 'Vivier API',
        version: '1.0.0',
        description:
          'The public API of Vivier, served by the gateway. Authenticate with `Authorization: Bearer <access token or API key>`.' +
          (unavailable.length > 0
            ? `\n\n**Incomplete:** the paths of ${unavailable.join(', ')} are missing because the service did not answer; reload in a few seconds.`
            : ''),
      },
      servers: [{ url: '/' }],
      tags: [],
      paths: {},
      components: {},
      security: [{ bearer: [] }],
      'x-vivier-unavailable-services': unavailable,
    };

    const sources: Array<[UpstreamName | 'gateway', OpenApiDocument]> = [['gateway', this.options.own()]];
    for (const [name, doc] of fetched) if (doc) sources.push([name, doc]);

    for (const [service, source] of sources) {
      // Components first, so the paths of this service can be rewritten with its renames.
      const renames = new Map<string, string>();
      const pending: Array<[string, string, unknown]> = [];
      for (const [section, entries] of Object.entries(source.components ?? {})) {
        if (section === 'securitySchemes') continue;
        const target = (merged.components[section] ??= {});
        for (const [name, value] of Object.entries(entries ?? {})) {
          if (!(name in target) || isDeepStrictEqual(target[name], value))
            pending.push([section, name, value]);
          else {
            const renamed = `${service}_${name}`;
            renames.set(`#/components/${section}/${name}`, `#/components/${section}/${renamed}`);
            pending.push([section, renamed, value]);
          }
        }
      }
      for (const [section, name, value] of pending)
        merged.components[section]![name] = rewriteRefs(value, renames);

      for (const [path, item] of Object.entries(source.paths ?? {})) {
        const route = service === 'gateway' ? undefined : routesTo(service, path);
        if (service !== 'gateway' && !route) continue;
        if (path in merged.paths) continue;
        const operations: Record<string, unknown> = {};
        for (const [method, operation] of Object.entries(
          rewriteRefs(item, renames) as Record<string, unknown>,
        )) {
          if (!HTTP_METHODS.has(method) || typeof operation !== 'object' || operation === null) {
            operations[method] = operation;
            continue;
          }
          const op = { ...(operation as Record<string, unknown>) };
          if (route?.access === 'public' && op.security === undefined) op.security = [];
          if (op.tags === undefined && service !== 'gateway') op.tags = [service];
          operations[method] = op;
        }
        merged.paths[path] = operations;
      }
      for (const tag of source.tags ?? [])
        if (!merged.tags!.some((t) => t.name === tag.name)) merged.tags!.push(tag);
    }
    merged.components.securitySchemes = { bearer: BEARER };
    merged.paths = Object.fromEntries(Object.entries(merged.paths).sort(([a], [b]) => a.localeCompare(b)));

    const ttl = unavailable.length > 0 ? Math.min(this.options.ttlMs, PARTIAL_TTL_MS) : this.options.ttlMs;
    this.cached = { document: merged, expiresAt: Date.now() + ttl };
    return merged;
  }
}
