/**
 * Prompt token counting on the OpenAI-compatible path (chat's `prepare` counts every request's
 * messages to reserve quota and check the context window):
 *
 *   npm run bench:tokens -w @vivier/bench
 *
 * A conversation of TURNS turns sent the way clients of that API send it: each request carries
 * the whole history again plus one new user message. "Cold" counts requests whose texts were never
 * seen (every text made unique), "warm" the same conversation growing turn by turn, as it is
 * counted in production. The baseline, in the same run: js-tiktoken 1.0.21, the tokenizer chat
 * used until 2026-12-06, on the same texts. In-process, one core; rounds alternate; medians.
 */
import { randomUUID } from 'node:crypto';
import { Tiktoken } from 'js-tiktoken/lite';
import o200k from 'js-tiktoken/ranks/o200k_base';
import { countPromptTokens, loadTokenizer, type ChatMessage } from '@vivier/providers';
import { machineNote, median, round, writeSection } from './stats';

const TURNS = Number(process.env.TURNS ?? 20);
const ROUNDS = Number(process.env.ROUNDS ?? 7);

const WORDS = 'the river runs past old mills and under stone bridges while the town wakes and boats leave for the sea'.split(' ');

/** A message of about `words` words, starting with `tag` so no two conversations share a text. */
function text(tag: string, words: number): string {
  const out = [tag];
  for (let i = 0; i < words; i++) out.push(WORDS[(i * 7 + tag.length) % WORDS.length]!);
  return `${out.join(' ')}.`;
}

/** The requests of one conversation: request i holds turns 0..i (user, assistant, …, user). */
function conversation(): ChatMessage[][] {
  const tag = randomUUID();
  const messages: ChatMessage[] = [{ role: 'system', content: text(`${tag} system`, 60) }];
  const requests: ChatMessage[][] = [];
  for (let turn = 0; turn < TURNS; turn++) {
    messages.push({ role: 'user', content: text(`${tag} q${turn}`, 40) });
    requests.push([...messages]);
    messages.push({ role: 'assistant', content: text(`${tag} a${turn}`, 120) });
  }
  return requests;
}

const baseline = new Tiktoken(o200k);
/** countPromptTokens with js-tiktoken and nothing remembered (4 per message, 3 for the primer). */
function baselinePromptTokens(messages: ChatMessage[]): number {
  let total = 3;
  for (const m of messages) total += 4 + baseline.encode(typeof m.content === 'string' ? m.content : '', [], []).length;
  return total;
}

/** Microseconds per count over one batch of texts (the rounds' medians are taken by the caller). */
function perText(count: (text: string) => number, texts: string[]): number {
  const t0 = performance.now();
  for (const t of texts) count(t);
  return ((performance.now() - t0) * 1000) / texts.length;
}

async function timeEach(requests: ChatMessage[][]): Promise<{ ms: number[]; tokens: number }> {
  const ms: number[] = [];
  let tokens = 0;
  for (const messages of requests) {
    const t0 = performance.now();
    tokens = await countPromptTokens(messages);
    ms.push(performance.now() - t0);
  }
  return { ms, tokens };
}

async function main(): Promise<void> {
  const tokenizer = await loadTokenizer();
  await timeEach(conversation()); // JIT warm-up
  const cold: number[] = [];
  const coldBaseline: number[] = [];
  const warm: number[] = [];
  let lastTokens = 0;
  // Texts of three sizes, each made unique so nothing is remembered: a question (~40 words), an
  // answer (~120 words), and a whole 20-turn history as one text.
  const kinds = [
    { name: 'a question, ~40 words', make: () => text(randomUUID(), 40) },
    { name: 'an answer, ~120 words', make: () => text(randomUUID(), 120) },
    { name: `a ${TURNS}-turn history as one text`, make: () => conversation().at(-1)!.map((m) => m.content as string).join('\n') },
  ];
  const perKind = kinds.map(() => ({ ours: [] as number[], baseline: [] as number[], chars: 0, tokens: 0 }));
  for (let r = 0; r < ROUNDS; r++) {
    // Cold: the last request of a conversation, every one of its texts new.
    const fresh = Array.from({ length: 5 }, () => conversation().at(-1)!);
    cold.push(median((await timeEach(fresh)).ms));
    const freshBaseline = Array.from({ length: 5 }, () => conversation().at(-1)!);
    coldBaseline.push(
      median(
        freshBaseline.map((messages) => {
          const t0 = performance.now();
          baselinePromptTokens(messages);
          return performance.now() - t0;
        }),
      ),
    );
    // Warm: one conversation turn by turn; the last request's time is the one compared.
    const grown = await timeEach(conversation());
    warm.push(grown.ms.at(-1)!);
    lastTokens = grown.tokens;
    for (const [i, kind] of kinds.entries()) {
      const n = i === 2 ? 5 : 200;
      const a = Array.from({ length: n }, kind.make);
      const b = Array.from({ length: n }, kind.make);
      perKind[i]!.ours.push(perText((t) => tokenizer.count(t), a));
      perKind[i]!.baseline.push(perText((t) => baseline.encode(t, [], []).length, b));
      const tokens = tokenizer.count(a[0]!);
      if (tokens !== baseline.encode(a[0]!, [], []).length) throw new Error(`the two tokenizers disagree on ${kind.name}`);
      perKind[i]!.chars = a[0]!.length;
      perKind[i]!.tokens = tokens;
    }
  }
  const coldMs = median(cold);
  const coldBaselineMs = median(coldBaseline);
  const warmMs = median(warm);
  const line = `cold ${round(coldMs, 3)} ms (js-tiktoken ${round(coldBaselineMs, 3)} ms), warm ${round(warmMs, 3)} ms, ${lastTokens} tokens`;
  process.stdout.write(`${line}\n`);
  const textRows = kinds.map((kind, i) => {
    const k = perKind[i]!;
    const ours = median(k.ours);
    const base = median(k.baseline);
    process.stdout.write(`${kind.name}: ${round(ours, 1)} us vs js-tiktoken ${round(base, 1)} us\n`);
    return `| ${kind.name} (${k.chars.toLocaleString('en')} characters, ${k.tokens.toLocaleString('en')} tokens) | **${round(ours, 1)} µs** | ${round(base, 1)} µs | ${round(base / ours, 1)}× |`;
  });
  await writeSection(
    'tokens',
    `## Prompt token counting on the OpenAI-compatible path (issue 6)

Command: \`npm run bench:tokens -w @vivier/bench\` (${machineNote()}; in-process, ${ROUNDS} rounds; medians).
Chat counts the prompt of every \`/v1/chat/completions\` request (the quota reservation is prompt + maximum output,
and a prompt past the model's window is refused before any call). A client of that API sends the whole history again
on each turn; here a conversation of ${TURNS} turns (a system prompt, questions of ~40 words, answers of ~120 words).

| last request of the conversation (${lastTokens} prompt tokens) | counting time, p50 |
| --- | --- |
| every text new, js-tiktoken 1.0.21 (baseline: chat's tokenizer until 2026-12-06) | ${round(coldBaselineMs, 3)} ms |
| every text new, gpt-tokenizer (nothing remembered) | **${round(coldMs, 3)} ms** |
| the same conversation grown turn by turn (texts of 64+ characters remembered) | **${round(warmMs, 3)} ms** |

One text, counted whole (every text new; the two tokenizers gave the same count for each):

| text | gpt-tokenizer 4.0.0 | js-tiktoken 1.0.21 | faster |
| --- | --- | --- | --- |
${textRows.join('\n')}

gpt-tokenizer counts with the same o200k_base ranks as OpenAI's tiktoken (a unit test pins its counts for both encodings,
special-token text counted as plain text) ${round(coldBaselineMs / coldMs, 1)}× faster than js-tiktoken on a new conversation.
Remembering the counts of long texts makes counting the last request a further ${round(coldMs / warmMs, 1)}× faster: only what it adds
(the last answer and the new question) and the short texts are counted. The cache holds digests, not texts, and at most 100,000 of them per
tokenizer (least recently used dropped first).`,
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
