import { HttpProblem } from '@vivier/service-kit';
import type { ModelInfo, ProviderRouter, ResolvedModel } from '@vivier/providers';

/** Which model ids the router serves, and the default for chats that name none. */
export class ModelCatalog {
  readonly defaultModel: string;

  constructor(
    readonly router: ProviderRouter,
    configuredDefault: string,
  ) {
    const listed = router.listModels();
    const fallback = listed[0]?.id ?? `${router.enabledProviders()[0] ?? 'sim'}/default`;
    this.defaultModel = configuredDefault.trim() || fallback;
    if (!router.resolve(this.defaultModel)) {
      throw new Error(`CHAT_DEFAULT_MODEL "${this.defaultModel}" is not served by any enabled provider or alias`);
    }
  }

  /** What `modelId` routes to; 400 `unknown_model` before anything is stored when nothing serves it. */
  resolve(modelId: string): ResolvedModel {
    const resolved = this.router.resolve(modelId);
    if (!resolved) {
      throw new HttpProblem(
        400,
        'unknown_model',
        `No enabled provider or alias serves "${modelId}". Use <provider>/<model> with one of: ${this.router.enabledProviders().join(', ')}, or an alias (GET /api/v1/models).`,
      );
    }
    return resolved;
  }

  list(): ModelInfo[] {
    return this.router.listModels();
  }
}
