// Deterministic reply text and the token approximation the simulator reports.
//
// Token counts here are deliberately simple and stated in the README: the adapters (and the
// gateway's own accounting) are what count tokens for real; the simulator only has to be
// consistent with itself so that tests can predict its numbers.

/** Prompt tokens: ceil(characters / 4) over all text, plus this many per image. */
export const TOKENS_PER_IMAGE = 85;

export function approxTokens(chars: number, images: number): number {
  return Math.max(1, Math.ceil(chars / 4) + images * TOKENS_PER_IMAGE);
}

/** FNV-1a, so the same prompt always yields the same reply across runs and machines. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** mulberry32: tiny, fast and good enough to pick words. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ADJ = [
  'quiet',
  'careful',
  'small',
  'steady',
  'bright',
  'simple',
  'patient',
  'remote',
  'gentle',
  'clear',
  'early',
  'narrow',
  'useful',
  'modest',
  'curious',
  'silent',
  'local',
  'durable',
  'sudden',
  'honest',
];
const NOUN = [
  'river',
  'garden',
  'engineer',
  'library',
  'message',
  'harbor',
  'window',
  'question',
  'village',
  'signal',
  'teacher',
  'market',
  'bridge',
  'notebook',
  'forest',
  'report',
  'server',
  'kitchen',
  'traveler',
  'lantern',
];
const VERB_S = [
  'carries',
  'follows',
  'answers',
  'reaches',
  'shapes',
  'protects',
  'describes',
  'remembers',
  'opens',
  'watches',
  'measures',
  'explains',
  'gathers',
  'crosses',
  'records',
  'finds',
];
const PREP = ['near', 'beyond', 'under', 'across', 'beside', 'behind', 'through', 'toward'];
const ADV = ['Usually', 'Later', 'Meanwhile', 'Often', 'Eventually', 'Sometimes', 'Today', 'Afterwards'];
const CONJ = ['because', 'while', 'although', 'until', 'since', 'whenever'];
const PRON = ['she', 'he', 'they', 'we', 'it', 'everyone'];
const VERB = ['listens', 'waits', 'arrives', 'returns', 'changes', 'rests', 'begins', 'agrees'];

function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)] as T;
}

function sentence(r: () => number): string[] {
  const the = r() < 0.5 ? 'the' : 'a';
  switch (Math.floor(r() * 3)) {
    case 0:
      return [
        'The',
        pick(r, ADJ),
        pick(r, NOUN),
        pick(r, VERB_S),
        'the',
        pick(r, NOUN),
        pick(r, PREP),
        the,
        pick(r, ADJ),
        `${pick(r, NOUN)}.`,
      ];
    case 1:
      return [
        `${pick(r, ADV)},`,
        'the',
        pick(r, NOUN),
        pick(r, VERB_S),
        the,
        pick(r, ADJ),
        pick(r, NOUN),
        pick(r, CONJ),
        pick(r, PRON),
        `${pick(r, VERB)}.`,
      ];
    default:
      return [
        'Every',
        pick(r, NOUN),
        pick(r, VERB_S),
        the,
        pick(r, NOUN),
        'and',
        pick(r, VERB),
        pick(r, PREP),
        'the',
        `${pick(r, NOUN)}.`,
      ];
  }
}

/**
 * Plausible English made of whole sentences, seeded by the prompt. With `exact`, the reply is
 * cut or extended to exactly `tokens` pieces; otherwise it stops at the first sentence end at or
 * past `tokens`, so replies read naturally.
 */
export function generatePieces(seed: number, tokens: number, exact: boolean): string[] {
  const r = rng(seed);
  const words: string[] = [];
  while (words.length < tokens) words.push(...sentence(r));
  if (exact) words.length = tokens;
  return words.map((w, i) => (i === 0 ? w : ` ${w}`));
}

/** Seeded default length, 24..64 tokens. */
export function defaultReplyTokens(seed: number): number {
  return 24 + (seed % 41);
}

/**
 * Split text into ~1-token pieces whose concatenation is exactly the input: runs of whitespace
 * plus a word, with words longer than 8 characters sliced into 6-character parts.
 */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  const re = /\s*\S+|\s+/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    const piece = m[0];
    if (piece.length <= 8) {
      out.push(piece);
      continue;
    }
    const lead = piece.length - piece.trimStart().length;
    let i = 0;
    let first = true;
    while (i < piece.length) {
      const size = first ? lead + 6 : 6;
      out.push(piece.slice(i, i + size));
      i += size;
      first = false;
    }
  }
  return out;
}

export interface PromptInfo {
  /** Characters of all text in the prompt (system and every message). */
  chars: number;
  /** Text of the last user turn (used for echo mode and the seed). */
  lastUserText: string;
  imageCount: number;
  /** Human readable summary of the images for the reply, e.g. "image/png". */
  imageTypes: string[];
}

export interface Reply {
  pieces: string[];
  text: string;
  promptTokens: number;
  completionTokens: number;
  /** True when a max-token cap cut the reply short. */
  truncated: boolean;
}

/**
 * The reply for a prompt: `echo:` returns the rest of the last user message verbatim; otherwise
 * seeded sentences, preceded by a sentence naming the images received so that an end-to-end test
 * can see them arrive.
 */
export function buildReply(
  model: string,
  prompt: PromptInfo,
  cap: number | undefined,
  replyTokens?: number,
): Reply {
  const last = prompt.lastUserText;
  let pieces: string[];
  const echo = /^\s*echo:/i.exec(last);
  if (echo) {
    pieces = tokenize(last.slice(echo[0].length).replace(/^ /, ''));
  } else {
    const seed = hash32(`${model}\u0000${last}\u0000${prompt.chars}`);
    const exact = replyTokens !== undefined && replyTokens >= 0;
    const n = exact ? replyTokens : defaultReplyTokens(seed);
    pieces = generatePieces(seed, n, exact);
    if (prompt.imageCount > 0 && !exact) {
      const kinds = [...new Set(prompt.imageTypes)].join(', ');
      const s = prompt.imageCount === 1 ? '' : 's';
      const intro = tokenize(`I received ${prompt.imageCount} image${s} (${kinds}). `);
      pieces = intro.concat(pieces);
    }
  }
  let truncated = false;
  if (cap !== undefined && cap >= 0 && pieces.length > cap) {
    pieces = pieces.slice(0, cap);
    truncated = true;
  }
  return {
    pieces,
    text: pieces.join(''),
    promptTokens: approxTokens(prompt.chars, prompt.imageCount),
    completionTokens: pieces.length,
    truncated,
  };
}
