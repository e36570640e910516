/**
 * Prompt token counting on the OpenAI-compatible path (chat's `prepare` counts every request's
 * messages to reserve quota and check the context window):
 *
 *   npm run bench:tokens -w @vivier/bench
 *
 * A conversation of TURNS turns sent the way clients of that API send it: each request carries
 * the whole history again plus one new user message. "Cold" counts requests whose texts were never
 * seen (every text made unique), "warm" the same conversation growing turn by turn, as it is
 * counted in production. In-process, one core; rounds alternate; medians.
 */
import { randomUUID } from 'node:crypto';
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
  await loadTokenizer();
  await timeEach(conversation()); // JIT warm-up
  const cold: number[] = [];
  const warm: number[] = [];
  let lastTokens = 0;
  for (let r = 0; r < ROUNDS; r++) {
    // Cold: the last request of a conversation, every one of its texts new.
    const fresh = Array.from({ length: 5 }, () => conversation().at(-1)!);
    cold.push(median((await timeEach(fresh)).ms));
    // Warm: one conversation turn by turn; the last request's time is the one compared.
    const grown = await timeEach(conversation());
    warm.push(grown.ms.at(-1)!);
    lastTokens = grown.tokens;
  }
  const coldMs = median(cold);
  const warmMs = median(warm);
  const line = `cold ${round(coldMs, 3)} ms, warm ${round(warmMs, 3)} ms, ${lastTokens} tokens`;
  process.stdout.write(`${line}\n`);
  await writeSection(
    'tokens',
    `## Prompt token counting on the OpenAI-compatible path (issue 6)

Command: \`npm run bench:tokens -w @vivier/bench\` (${machineNote()}; in-process, ${ROUNDS} rounds; medians).
Chat counts the prompt of every \`/v1/chat/completions\` request (the quota reservation is prompt + maximum output,
and a prompt past the model's window is refused before any call). A client of that API sends the whole history again
on each turn; here a conversation of ${TURNS} turns (a system prompt, questions of ~40 words, answers of ~120 words).

| last request of the conversation (${lastTokens} prompt tokens) | counting time, p50 |
| --- | --- |
| every text new (as before 2026-12-05: nothing remembered) | **${round(coldMs, 3)} ms** |
| the same conversation grown turn by turn (texts of 64+ characters remembered) | **${round(warmMs, 3)} ms** |

Remembering the counts of long texts makes counting the last request ${round(coldMs / warmMs, 1)}× faster: only what it adds
(the last answer and the new question) and the short texts are encoded. The cache holds digests, not texts, and at most 100,000 of them per
tokenizer (least recently used dropped first).`,
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
