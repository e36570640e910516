import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { APPS, fromRoot } from './paths';
import { PROMETHEUS_SERIES, balanceProblems, defaultMetrics, exportedMetrics, familyOf, groupingLabels, metricNames } from './promql';
import { defaultPorts, findTool, readYaml, run } from './support';

// infra/observability: every metric the alerts and the dashboard read is one the code exports
// today (found in the prom-client constructors of apps/ and libs/), one of prom-client's default
// metrics, or listed below as planned. Expressions are checked for balance here, and parsed by
// promtool when it is installed (PROMTOOL=/path or on PATH; .ci/run unpacks Debian's).

/**
 * Metrics the alerts and the dashboard use before any code exports them. Each names who adds it;
 * until then the rules that read it never fire and their panels stay empty (their annotations and
 * descriptions say so).
 */
const PLANNED_METRICS: Record<string, string> = {
  // None today: vivier_provider_* are exported by @vivier/providers (provider-metrics.ts).
};

const DIR = fromRoot('infra/observability');
const PROMTOOL = findTool('promtool', 'PROMTOOL');
const exported = exportedMetrics();
const defaults = defaultMetrics();
const isKnown = (name: string) => exported.has(name) || defaults.has(name) || PROMETHEUS_SERIES.has(name) || name in PLANNED_METRICS;
const families = (expr: string) => metricNames(expr).map((name) => ({ name, family: familyOf(name, isKnown) }));

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const alerts = readYaml<{ groups: Array<{ name: string; rules: Rule[] }> }>(path.join(DIR, 'alerts.yml'));
const rules = alerts.groups.flatMap((g) => g.rules);

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { uid: string };
  targets?: Array<{ expr: string; refId: string }>;
  panels?: Panel[];
}
const dashboard = JSON.parse(readFileSync(path.join(DIR, 'grafana-dashboard.json'), 'utf8')) as {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string }> };
};
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
const dashboardExprs = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

describe('the metric names of the code', () => {
  it('are found where the service kit and the messaging library define them', () => {
    expect(exported.get('http_request_duration_seconds')).toMatchObject({ kind: 'Histogram', file: 'libs/shared/service-kit/src/metrics.ts' });
    for (const name of ['vivier_outbox_backlog_events', 'vivier_consumer_lag_messages', 'vivier_consumer_dead_letters_total']) {
      expect(exported.get(name)?.file, name).toBe('libs/shared/messaging/src/metrics.ts');
    }
    expect(defaults.has('process_cpu_seconds_total')).toBe(true);
    for (const name of ['vivier_provider_requests_total', 'vivier_provider_time_to_first_token_seconds']) {
      expect(exported.get(name)?.file, name).toBe('libs/shared/providers/src/provider-metrics.ts');
    }
    for (const name of Object.keys(PLANNED_METRICS)) expect(exported.has(name), `${name} is exported now: remove it from PLANNED_METRICS`).toBe(false);
  });

  it('are extracted from PromQL without labels, functions or Grafana variables', () => {
    expect(
      metricNames('histogram_quantile(0.99, sum by (le, service) (rate(http_request_duration_seconds_bucket{route!~"/a|/b", service=~"$service"}[$__rate_interval]))) > 2.5'),
    ).toEqual(['http_request_duration_seconds_bucket']);
    expect(metricNames('sum(rate(a_total[5m])) / (sum(rate(b_total[5m])) + 1e3) and on (x) c offset 5m')).toEqual(['a_total', 'b_total', 'c']);
    expect(balanceProblems('sum(rate(x[5m])')).toEqual(['unclosed (']);
    expect(balanceProblems('x{a="("}')).toEqual([]);
    expect(balanceProblems('sum(x])')).toEqual(['unbalanced ]']);
  });
});

describe('infra/observability/alerts.yml', () => {
  it('covers error rate, p99 latency, consumer lag, outbox backlog, dead letters and provider failures', () => {
    const exprs = rules.map((r) => r.expr).join('\n');
    expect(exprs).toContain('http_request_duration_seconds_count{status_code=~"5.."}');
    expect(exprs).toContain('histogram_quantile(0.99');
    for (const metric of ['vivier_consumer_lag_messages', 'vivier_outbox_backlog_events', 'vivier_provider_requests_total', 'vivier_provider_time_to_first_token_seconds']) {
      expect(exprs).toContain(metric);
    }
    expect(exprs).toMatch(/increase\(vivier_consumer_dead_letters_total\[15m\]\)/);
  });

  it('has alert rules with a name, a for duration, a severity and a summary', () => {
    const names = new Set<string>();
    for (const rule of rules) {
      expect(rule.alert, JSON.stringify(rule)).toMatch(/^Vivier[A-Z][A-Za-z0-9]+$/);
      expect(names.has(rule.alert!), `${rule.alert} twice`).toBe(false);
      names.add(rule.alert!);
      expect(rule.for, `${rule.alert}: for`).toMatch(/^\d+(ms|s|m|h|d)$/);
      expect(['critical', 'warning', 'info'], `${rule.alert}: severity`).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary?.trim(), `${rule.alert}: summary`).toBeTruthy();
      expect(rule.annotations?.description?.trim(), `${rule.alert}: description`).toBeTruthy();
    }
  });

  it('reads only metrics that exist or are planned, in balanced expressions that keep the labels they print', () => {
    for (const rule of rules) {
      expect(balanceProblems(rule.expr), rule.alert).toEqual([]);
      for (const { name, family } of families(rule.expr)) {
        expect(family, `${rule.alert} reads ${name}: neither exported by the code nor planned`).toBeDefined();
        if (family! in PLANNED_METRICS) {
          expect(`${rule.annotations?.description}`, `${rule.alert}: say that ${family} is planned`).toMatch(/planned/i);
        }
      }
      const grouped = groupingLabels(rule.expr);
      if (grouped.size === 0) continue;
      const text = Object.values(rule.annotations ?? {}).join(' ');
      for (const match of text.matchAll(/\$labels\.([a-zA-Z_]+)/g)) {
        expect(grouped.has(match[1]!), `${rule.alert} prints $labels.${match[1]} that its aggregation drops`).toBe(true);
      }
    }
  });

  it('is explained in docs/operations.md, alert by alert', () => {
    const operations = readFileSync(fromRoot('docs/operations.md'), 'utf8');
    for (const rule of rules) expect(operations, `docs/operations.md explains ${rule.alert}`).toContain(rule.alert!);
  });
});

describe('infra/observability/grafana-dashboard.json', () => {
  it('has panels for requests, errors, latency, outbox, lag, retries and DLQ, providers and streams', () => {
    expect(dashboard.uid).toBeTruthy();
    const all = dashboardExprs.map((e) => e.expr).join('\n');
    for (const metric of [
      'http_request_duration_seconds_count',
      'http_request_duration_seconds_bucket',
      'vivier_outbox_backlog_events',
      'vivier_consumer_lag_messages',
      'vivier_consumer_retries_total',
      'vivier_consumer_dead_letters_total',
      'vivier_provider_requests_total',
      'vivier_provider_time_to_first_token_seconds',
      'vivier_chat_replies_in_flight',
    ]) {
      expect(all, metric).toContain(metric);
    }
    expect(all).toMatch(/by \([^)]*route/); // by route, not only by service
  });

  it('is well formed: unique ids, panels inside the 24-column grid, a data source and a query each', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of panels) {
      expect(panel.gridPos.x + panel.gridPos.w, panel.title).toBeLessThanOrEqual(24);
      expect(panel.datasource?.uid, panel.title).toBe('${datasource}');
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
    }
    const variables = new Set(dashboard.templating.list.map((v) => v.name));
    for (const { panel, expr } of dashboardExprs) {
      for (const match of expr.matchAll(/\$(?!__)(\w+)|\$\{(\w+)\}/g)) expect(variables.has(match[1] ?? match[2]!), `${panel}: $${match[1] ?? match[2]}`).toBe(true);
    }
  });

  it('queries only metrics that exist or are planned, in balanced expressions', () => {
    for (const { panel, expr } of dashboardExprs) {
      expect(balanceProblems(expr), panel).toEqual([]);
      for (const { name, family } of families(expr)) {
        expect(family, `panel "${panel}" reads ${name}: neither exported by the code nor planned`).toBeDefined();
        if (family! in PLANNED_METRICS) expect(panel, `panel "${panel}" says its metric is planned`).toMatch(/planned/i);
      }
    }
  });
});

describe('infra/observability/prometheus*.yml', () => {
  interface ScrapeConfig {
    job_name: string;
    static_configs?: Array<{ targets: string[]; labels?: Record<string, string> }>;
    kubernetes_sd_configs?: Array<{ role: string; namespaces?: { names: string[] } }>;
    relabel_configs?: Array<{ source_labels?: string[]; regex?: string; action?: string; target_label?: string }>;
  }
  const compose = readYaml<{ rule_files: string[]; scrape_configs: ScrapeConfig[] }>(path.join(DIR, 'prometheus.yml'));
  const k8s = readYaml<{ rule_files: string[]; scrape_configs: ScrapeConfig[] }>(path.join(DIR, 'prometheus-k8s.yml'));

  it('compose: scrapes the five services at their compose names and ports, and loads the alerts', () => {
    const ports = defaultPorts();
    const job = compose.scrape_configs.find((c) => c.job_name === 'vivier')!;
    const targets = job.static_configs!.flatMap((s) => s.targets).sort();
    expect(targets).toEqual(APPS.map((app) => `${app}:${ports[app]}`).sort());
    expect(compose.rule_files.map((f) => path.basename(f))).toContain('alerts.yml');
    const dockerCompose = readFileSync(fromRoot('docker-compose.yml'), 'utf8');
    for (const file of compose.rule_files) expect(dockerCompose).toContain(`./infra/observability/${path.basename(file)}:${file}:ro`);
    // Alerts select this job by name.
    expect(rules.find((r) => r.alert === 'VivierServiceDown')?.expr).toContain(`job="${job.job_name}"`);
  });

  it('kubernetes: discovers the annotated Vivier pods of both overlays namespaces', () => {
    const job = k8s.scrape_configs.find((c) => c.job_name === 'vivier')!;
    expect(job.kubernetes_sd_configs?.[0]?.role).toBe('pod');
    const namespaces = job.kubernetes_sd_configs![0]!.namespaces!.names;
    for (const overlay of ['dev', 'prod']) {
      const kustomization = readYaml<{ namespace: string }>(fromRoot('infra/k8s/overlays', overlay, 'kustomization.yaml'));
      expect(namespaces).toContain(kustomization.namespace);
    }
    const keeps = job.relabel_configs!.filter((r) => r.action === 'keep').map((r) => r.source_labels?.[0]);
    expect(keeps).toContain('__meta_kubernetes_pod_annotation_prometheus_io_scrape');
    expect(keeps).toContain('__meta_kubernetes_pod_label_app_kubernetes_io_part_of');
    // `service` is the apps' own label: the target must not overwrite it.
    expect(job.relabel_configs!.map((r) => r.target_label)).not.toContain('service');
    expect(k8s.rule_files.map((f) => path.basename(f))).toContain('alerts.yml');
  });
});

describe.runIf(PROMTOOL)('promtool', () => {
  it('parses the alert rules', async () => {
    const result = await run(PROMTOOL!, ['check', 'rules', path.join(DIR, 'alerts.yml')]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
  });

  it('parses the compose Prometheus configuration', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vivier-promtool-'));
    try {
      const config = readFileSync(path.join(DIR, 'prometheus.yml'), 'utf8').replace('/etc/prometheus/alerts.yml', path.join(DIR, 'alerts.yml'));
      await writeFile(path.join(dir, 'prometheus.yml'), config);
      const result = await run(PROMTOOL!, ['check', 'config', path.join(dir, 'prometheus.yml')]);
      expect(result.code, result.stdout + result.stderr).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("parses every dashboard query (as recording rules, Grafana's variables filled in)", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vivier-promtool-'));
    try {
      const recordings = dashboardExprs.map(({ expr }, i) => ({
        record: `vivier:dashboard_query_${i}`,
        expr: expr.replace(/\$__rate_interval/g, '5m').replace(/\$\{?service\}?/g, '.*'),
      }));
      await writeFile(path.join(dir, 'dashboard.rules.json'), JSON.stringify({ groups: [{ name: 'dashboard', rules: recordings }] }));
      const result = await run(PROMTOOL!, ['check', 'rules', path.join(dir, 'dashboard.rules.json')]);
      expect(result.code, result.stdout + result.stderr).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
