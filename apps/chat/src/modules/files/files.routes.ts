import { Type } from '@sinclair/typebox';
import multipart from '@fastify/multipart';
import { caller, problems, requireIdentity, type ServiceApp } from '@vivier/service-kit';
import { IdParams, Timestamp, Uuid, problemResponses } from '../../http.schema';
import { fileView, type FilesService, type ReadFile } from './files.service';

const FileInfo = Type.Object({ id: Uuid, name: Type.String(), size: Type.Integer(), contentType: Type.String(), createdAt: Timestamp });

/** Room for the multipart framing around the largest accepted file. */
const MULTIPART_OVERHEAD = 64 * 1024;

export async function filesRoutes(app: ServiceApp, { files, maxBytes }: { files: FilesService; maxBytes: number }): Promise<void> {
  await app.register(multipart, { limits: { fileSize: maxBytes, files: 1, fields: 5, parts: 6 }, throwFileSizeLimit: true });
  app.addHook('preHandler', requireIdentity);

  app.post(
    '/api/v1/files',
    {
      schema: {
        tags: ['files'],
        security: [{ bearer: [] }],
        summary: 'Upload an attachment',
        description:
          'multipart/form-data with one file part. Text files (UTF-8) are added to the model context of a message that attaches them; images are passed to providers as image parts. Too large → 413 `payload_too_large`, type not accepted (or text not UTF-8) → 415 `unsupported_media_type`, no file part or more than one → 400 `validation_failed`; nothing is stored then.',
        consumes: ['multipart/form-data'],
        response: { 201: FileInfo, ...problemResponses(400, 401, 413, 415) },
      },
    },
    async (request, reply) => {
      const declared = Number(request.headers['content-length']);
      if (Number.isFinite(declared) && declared > maxBytes + MULTIPART_OVERHEAD) throw files.tooLarge();
      if (!request.isMultipart()) throw problems.unsupportedMediaType('Send the file as multipart/form-data.');
      // The whole form is read before anything is stored: a second file (past the parts limit)
      // refuses the request, where taking the first and dropping the rest would store half of it.
      let file: ReadFile | undefined;
      try {
        for await (const part of request.parts()) {
          if (part.type !== 'file') continue;
          if (file) throw problems.badRequest('validation_failed', 'Send one file per request.');
          file = await files.read(part);
        }
      } catch (error) {
        const code = (error as { code?: string }).code;
        if (code === 'FST_REQ_FILE_TOO_LARGE') throw files.tooLarge();
        if (code === 'FST_FILES_LIMIT' || code === 'FST_PARTS_LIMIT' || code === 'FST_FIELDS_LIMIT') throw problems.badRequest('validation_failed', 'Send one file per request.');
        throw error;
      }
      if (!file) throw problems.badRequest('validation_failed', 'The request has no file part.');
      return reply.code(201).send(await files.store(caller(request), file));
    },
  );

  app.get(
    '/api/v1/files/:id',
    {
      schema: { tags: ['files'], security: [{ bearer: [] }], summary: 'An uploaded file', params: IdParams, response: { 200: FileInfo, ...problemResponses(401, 404) } },
    },
    async (request) => fileView(await files.require(caller(request), request.params.id)),
  );

  app.get(
    '/api/v1/files/:id/content',
    {
      schema: {
        tags: ['files'],
        security: [{ bearer: [] }],
        summary: 'The bytes of an uploaded file',
        params: IdParams,
        response: { 200: { description: 'the file', content: { 'application/octet-stream': { schema: Type.String({ format: 'binary' }) } } }, ...problemResponses(401, 404) },
      },
    },
    async (request, reply) => {
      const { row, body } = await files.content(caller(request), request.params.id);
      return reply
        .type(row.contentType)
        .header('content-length', String(row.sizeBytes))
        .header('content-disposition', `attachment; filename*=UTF-8''${encodeURIComponent(row.name)}`)
        .header('x-content-type-options', 'nosniff')
        .send(body as unknown as string);
    },
  );
}
