import { EVENTS, type EventType } from '@vivier/contracts';
import type { EventHandler, EventHandlers } from '@vivier/messaging';
import type { AuditService } from './audit.service';

/** The events the audit log keeps: every auth and admin event, and the results of data exports. */
export const AUDITED_EVENT_TYPES: readonly EventType[] = [
  EVENTS.authUserRegistered.type,
  EVENTS.authUserUpdated.type,
  EVENTS.authUserLoggedIn.type,
  EVENTS.authLoginFailed.type,
  EVENTS.authSessionRefreshed.type,
  EVENTS.authSessionRevoked.type,
  EVENTS.authOperationFailed.type,
  EVENTS.authMfaEnabled.type,
  EVENTS.authMfaDisabled.type,
  EVENTS.authApiKeyCreated.type,
  EVENTS.authApiKeyRevoked.type,
  EVENTS.adminUserRoleChanged.type,
  EVENTS.adminUserDisabled.type,
  EVENTS.adminUserEnabled.type,
  EVENTS.adminQuotaSet.type,
  EVENTS.adminProviderConfigured.type,
  EVENTS.workerExportReady.type,
  EVENTS.workerExportFailed.type,
];

/**
 * `auth.events`, `admin.events`, `worker.events` (exports) → the audit log, one row per event id.
 * Admin's own events are usually recorded already, in the transaction that published them; the
 * insert skips them.
 */
export function auditHandlers(audit: AuditService): EventHandlers {
  const handler: EventHandler = async (event, { tx }) => {
    await audit.record([event], tx);
  };
  return {
    ...(Object.fromEntries(AUDITED_EVENT_TYPES.map((type) => [type, handler])) as EventHandlers),
    // Admin republishes every provider's settings now and then (ProvidersService.republish), as
    // new events of the same revision: a revision is one change, recorded once.
    [EVENTS.adminProviderConfigured.type]: async (event, { tx }) => {
      if (await audit.hasProviderRevision(event.data.providerId, event.data.revision, tx)) return;
      await audit.record([event], tx);
    },
  };
}
