/** Small helpers shared by the benchmarks: percentiles, medians, and the benchmarks.md writer. */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

export const median = (values: number[]) => percentile(values, 50);

export const round = (n: number, digits = 1) => Number(n.toFixed(digits));

const BENCHMARKS_MD = fileURLToPath(new URL('../../../docs/benchmarks.md', import.meta.url));

/**
 * Replaces (or appends) the section between `<!-- bench:<id> -->` markers in docs/benchmarks.md,
 * so each benchmark rewrites only its own results.
 */
export async function writeSection(id: string, markdown: string): Promise<void> {
  let doc = '';
  try {
    doc = await readFile(BENCHMARKS_MD, 'utf8');
  } catch {
    doc = '# Benchmarks\n\nMeasured on the project machine (2 cores, 24 GiB, shared and noisy): every figure is a median of\nrepeated rounds, compared with a baseline measured in the same run.\n';
  }
  const start = `<!-- bench:${id} -->`;
  const end = `<!-- /bench:${id} -->`;
  const block = `${start}\n${markdown.trim()}\n${end}`;
  const pattern = new RegExp(`${start}[\\s\\S]*?${end}`);
  doc = pattern.test(doc) ? doc.replace(pattern, block) : `${doc.trimEnd()}\n\n${block}\n`;
  await writeFile(BENCHMARKS_MD, doc);
  process.stdout.write(`wrote section ${id} of ${path.relative(process.cwd(), BENCHMARKS_MD)}\n`);
}

export function machineNote(): string {
  return `Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
}
