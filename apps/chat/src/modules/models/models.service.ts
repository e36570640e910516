import { HttpProblem } from '@vivier/service-kit';
import type { ModelInfo, ProviderRouter, ResolvedModel } from '@vivier/providers';

/** Which model ids the router serves, and the default for chats that name none. */
export class ModelCatalog {
  private readonly configuredDefault: string;

  constructor(
    readonly router: ProviderRouter,
    configuredDefault: string,
  ) {
    this.configuredDefault = configuredDefault.trim();
  }

  /**
   * Stops the start when CHAT_DEFAULT_MODEL is served by nothing: called once the providers set
   * through the admin API have been applied (the default may be one of theirs).
   */
  assertDefaultServed(): void {
    if (this.configuredDefault && !this.router.resolve(this.configuredDefault)) {
      throw new Error(`CHAT_DEFAULT_MODEL "${this.configuredDefault}" is not served by any enabled provider or alias`);
    }
  }

  /**
   * CHAT_DEFAULT_MODEL while it is served; otherwise (unset, or its provider turned off through the
   * admin API) the first model the router lists.
   */
  get defaultModel(): string {
    if (this.configuredDefault && this.router.resolve(this.configuredDefault)) return this.configuredDefault;
    return this.router.listModels()[0]?.id ?? `${this.router.enabledProviders()[0] ?? 'sim'}/default`;
  }

  /** Whether anything serves `modelId` now. */
  servable(modelId: string): boolean {
    return this.router.resolve(modelId) !== undefined;
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
