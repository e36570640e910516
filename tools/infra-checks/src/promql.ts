import { readFileSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fromRoot } from './paths';

/** PromQL keywords and aggregation modifiers: words in an expression that are not metrics. */
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'atan2', 'inf', 'nan']);

const withoutStrings = (expr: string) => expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');

/** Problems with brackets and quotes: every (, [ and { closed in order, every string closed. */
export function balanceProblems(expr: string): string[] {
  const problems: string[] = [];
  const stripped = withoutStrings(expr);
  if (/["'`]/.test(stripped.replace(/""/g, ''))) problems.push('an unterminated string');
  const stack: string[] = [];
  const pairs: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  for (const char of stripped) {
    if ('([{'.includes(char)) stack.push(char);
    else if (char in pairs) {
      if (stack.pop() !== pairs[char]) {
        problems.push(`unbalanced ${char}`);
        break;
      }
    }
  }
  if (stack.length > 0) problems.push(`unclosed ${stack.join('')}`);
  if (/\(\s*\)/.test(stripped.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(\s*\)/g, '')) && !/\b(time|vector|scalar|pi)\s*\(\s*\)/.test(stripped)) {
    problems.push('an empty ()');
  }
  return problems;
}

/** The metric names an expression selects (Grafana variables and label matchers ignored). */
export function metricNames(expr: string): string[] {
  const cleaned = withoutStrings(expr)
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\boffset\s+-?\w+/g, ' ');
  const names = new Set<string>();
  for (const match of cleaned.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const [, word, call] = match;
    if (call || KEYWORDS.has(word!.toLowerCase())) continue;
    // A number's exponent or unit (1e3, 5m) is no metric.
    const before = cleaned[match.index! - 1];
    if (before && /[0-9.]/.test(before)) continue;
    names.add(word!);
  }
  return [...names];
}

/** Label names of every `by (...)` clause of an expression. */
export function groupingLabels(expr: string): Set<string> {
  const labels = new Set<string>();
  for (const match of withoutStrings(expr).matchAll(/\bby\s*\(([^)]*)\)/g)) {
    for (const label of match[1]!.split(',')) if (label.trim()) labels.add(label.trim());
  }
  return labels;
}

const sourceFiles = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    if (name === 'node_modules' || name === 'dist') return [];
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return sourceFiles(full);
    return name.endsWith('.ts') && !name.endsWith('.test.ts') ? [full] : [];
  });

/**
 * The metrics the code exports today: every `name: '…'` in a source file of apps/ or libs/ that
 * uses prom-client (Counter, Gauge, Histogram constructors), with their kinds.
 */
export function exportedMetrics(): Map<string, { kind: string; file: string }> {
  const metrics = new Map<string, { kind: string; file: string }>();
  for (const file of [...sourceFiles(fromRoot('apps')), ...sourceFiles(fromRoot('libs'))]) {
    const source = readFileSync(file, 'utf8');
    if (!source.includes('prom-client')) continue;
    for (const match of source.matchAll(/new\s+(Counter|Gauge|Histogram|Summary)\s*(?:<[^>]*>)?\s*\(\s*\{\s*name:\s*'([a-zA-Z_:][a-zA-Z0-9_:]*)'/g)) {
      metrics.set(match[2]!, { kind: match[1]!, file: path.relative(fromRoot(), file) });
    }
  }
  return metrics;
}

/** What prom-client's collectDefaultMetrics (on in service-kit's metrics plugin) exports. */
export function defaultMetrics(): Set<string> {
  const require = createRequire(fromRoot('libs/shared/service-kit/package.json'));
  const dir = path.join(path.dirname(require.resolve('prom-client/package.json')), 'lib', 'metrics');
  const names = new Set<string>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.js'))) {
    for (const match of readFileSync(path.join(dir, file), 'utf8').matchAll(/'((?:process|nodejs)_[a-z0-9_]+)'/g)) names.add(match[1]!);
  }
  return names;
}

/** Series Prometheus itself adds to every scrape. */
export const PROMETHEUS_SERIES = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped']);

/** `name` itself, or the histogram or summary it is a series of (_bucket, _count, _sum). */
export function familyOf(name: string, known: (candidate: string) => boolean): string | undefined {
  if (known(name)) return name;
  const base = name.replace(/_(bucket|count|sum)$/, '');
  return base !== name && known(base) ? base : undefined;
}
