import { EVENTS } from '@vivier/contracts';
import type { EventHandlers } from '@vivier/messaging';
import type { usersRepository } from './users.repository';

/**
 * `auth.events` → admin.users. Events of one user share a partition (keyed by user id), so they
 * arrive in order. Admin's own `admin.events` are not applied here: their effect was written in
 * the transaction that published them, and applying an old one again could undo a newer change.
 */
export function usersHandlers(users: ReturnType<typeof usersRepository>): EventHandlers {
  return {
    [EVENTS.authUserRegistered.type]: async (event, { tx }) => {
      const { userId, email, name, role } = event.data;
      await users.insertRegistered({ id: userId, email, name, role, createdAt: new Date(event.time) }, tx);
    },
    [EVENTS.authUserUpdated.type]: async (event, { tx }) => {
      const { email, name, role } = event.data.changes;
      const changes = { ...(email === undefined ? {} : { email }), ...(name === undefined ? {} : { name }), ...(role === undefined ? {} : { role }) };
      await users.applyProfile(event.data.userId, changes, new Date(event.time), tx);
    },
    [EVENTS.authUserLoggedIn.type]: async (event, { tx }) => {
      await users.recordLogin(event.data.userId, new Date(event.time), tx);
    },
    [EVENTS.authMfaEnabled.type]: async (event, { tx }) => {
      await users.setMfa(event.data.userId, true, tx);
    },
    [EVENTS.authMfaDisabled.type]: async (event, { tx }) => {
      await users.setMfa(event.data.userId, false, tx);
    },
  };
}
