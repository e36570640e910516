import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Problem, problemResponses, problems, Timestamp, Uuid } from '@vivier/service-kit';

// Schemas shared by the chat routes: they validate requests, shape responses and become the
// OpenAPI document the gateway serves.

export { Problem, problemResponses, Timestamp, Uuid };

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

export const IdParams = Type.Object({ id: Uuid });
export const MessageParams = Type.Object({ id: Uuid, messageId: Uuid });

export const PageQuery = Type.Object({
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
  cursor: Type.Optional(Type.String({ maxLength: 200, description: 'nextCursor of the previous page' })),
});

export const ModelIdField = Type.String({ minLength: 1, maxLength: 256, description: 'model id `<provider>/<model>` or an alias' });
export const TitleField = Type.String({ minLength: 1, maxLength: 200 });
export const SystemPromptField = Type.String({ maxLength: 100_000 });

export const Chat = Type.Object({
  id: Uuid,
  title: Nullable(Type.String()),
  model: Type.String(),
  systemPrompt: Nullable(Type.String()),
  archived: Type.Boolean(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});
export type ChatView = Static<typeof Chat>;

export const Usage = Type.Object({
  promptTokens: Type.Integer({ minimum: 0 }),
  completionTokens: Type.Integer({ minimum: 0 }),
});

export const MessageStatusField = Type.Union(
  [Type.Literal('completed'), Type.Literal('streaming'), Type.Literal('queued'), Type.Literal('cancelled'), Type.Literal('failed')],
  { description: '`streaming`/`queued` while a reply runs; `completed`, `cancelled` or `failed` at its end' },
);

export const Message = Type.Object({
  id: Uuid,
  chatId: Uuid,
  role: Type.Union([Type.Literal('user'), Type.Literal('assistant')]),
  content: Type.String({ description: 'the text; a failed or cancelled reply keeps what was produced' }),
  status: MessageStatusField,
  model: Nullable(Type.String({ description: 'user message: the model asked for; reply: `<provider>/<model>` that answered' })),
  provider: Nullable(Type.String()),
  usage: Nullable(Usage),
  cached: Type.Boolean({ description: 'the reply came from the response cache' }),
  replyTo: Nullable(Uuid),
  attachments: Type.Array(Uuid),
  error: Nullable(Type.Object({ code: Type.String(), detail: Type.String() })),
  latencyMs: Nullable(Type.Integer()),
  timeToFirstTokenMs: Nullable(Type.Integer()),
  createdAt: Timestamp,
  completedAt: Nullable(Timestamp),
});
export type MessageView = Static<typeof Message>;

export function pageSchema<T extends TSchema>(item: T) {
  return Type.Object({ items: Type.Array(item), nextCursor: Nullable(Type.String()) });
}

/** An opaque cursor naming the last item of a page (ids are time-ordered UUIDv7). */
export function encodeCursor(id: string): string {
  return Buffer.from(id).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  const id = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) {
    throw problems.validation('The cursor is invalid.', [{ path: 'querystring/cursor', message: 'is invalid' }]);
  }
  return id.toLowerCase();
}

/** `{items, nextCursor}` from rows fetched with limit + 1. */
export function pageOf<R extends { id: string }, T>(rows: R[], limit: number, view: (row: R) => T): { items: T[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items: items.map(view), nextCursor: rows.length > limit && last ? encodeCursor(last.id) : null };
}
