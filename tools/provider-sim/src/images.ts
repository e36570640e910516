import type { ImageRecord, Protocol } from './types.js';

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

function sniff(b64: string): ImageRecord['detectedType'] {
  // 16 base64 characters decode to the 12 bytes that hold every magic number we look for.
  const head = Buffer.from(b64.slice(0, 16), 'base64');
  if (head.length >= 8 && head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4e && head[3] === 0x47)
    return 'image/png';
  if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return 'image/jpeg';
  if (head.length >= 4 && head.toString('latin1', 0, 4) === 'GIF8') return 'image/gif';
  if (
    head.length >= 12 &&
    head.toString('latin1', 0, 4) === 'RIFF' &&
    head.toString('latin1', 8, 12) === 'WEBP'
  ) {
    return 'image/webp';
  }
  return 'unknown';
}

export function inlineImage(
  protocol: Protocol,
  path: string,
  declaredType: string,
  data: unknown,
): ImageRecord {
  const b64 = typeof data === 'string' ? data : '';
  const valid = b64.length > 0 && b64.length % 4 === 0 && B64.test(b64);
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
  return {
    protocol,
    path,
    source: 'base64',
    declaredType,
    detectedType: valid ? sniff(b64) : 'unknown',
    bytes: valid ? (b64.length / 4) * 3 - pad : 0,
    validBase64: valid,
  };
}

/** OpenAI `image_url.url` and Responses `input_image.image_url`: a data: URL or a remote URL. */
export function urlImage(protocol: Protocol, path: string, url: unknown, declaredType = ''): ImageRecord {
  const u = typeof url === 'string' ? url : '';
  const m = /^data:([^;,]*)(;base64)?,/.exec(u);
  if (m) return inlineImage(protocol, path, m[1] ?? '', u.slice(m[0].length));
  return {
    protocol,
    path,
    source: 'url',
    declaredType,
    detectedType: 'unknown',
    bytes: 0,
    validBase64: true,
    url: u,
  };
}

export function imageLabel(img: ImageRecord): string {
  if (img.detectedType !== 'unknown') return img.detectedType;
  return img.declaredType || (img.source === 'url' ? 'remote image' : 'unknown image');
}
