/**
 * `npm run bench` (after `npx tsc -p .`): every scenario, a table on stdout, and every figure
 * with the machine's description in bench/results.json.
 *
 *   npm run bench                  all six scenarios (under 15 minutes on 2 cores)
 *   npm run bench -- --quick       the reduced variant (under 2 minutes)
 *   npm run bench -- --only 3      one scenario (repeatable: --only 1 --only 4)
 *
 * Benchmarks measure and never fail the suite: a missed goal is printed as "no", and the exit
 * code is 0 unless a scenario could not run at all (then 1, with the reason).
 */
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { machine, ROOT, type Row, type Scenario, type ScenarioResult } from './common.js';
import { controlFlood } from './control-flood.js';
import { fleet } from './fleet.js';
import { fleetOfDaemons } from './fleet-of-daemons.js';
import { footprint } from './footprint.js';
import { policyThroughput } from './policy-throughput.js';
import { rotationLatency } from './rotation-latency.js';

const SCENARIOS: readonly Scenario[] = [policyThroughput, fleet, rotationLatency, footprint, fleetOfDaemons, controlFlood];

function table(rows: string[][]): string {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

function metText(met: boolean | null | undefined): string {
  return met === true ? 'yes' : met === false ? 'NO' : met === null ? 'n/a' : '';
}

export function renderTable(results: readonly ScenarioResult[]): string {
  const rows = [['#', 'measure', 'certd', 'against', 'other', 'ratio', 'goal', 'met']];
  for (const r of results) {
    for (const row of r.rows as Row[]) {
      rows.push([String(r.id), row.measure, row.certd, row.against ?? '', row.other ?? '', row.ratio ?? '', row.goal ?? '', metText(row.met)]);
    }
  }
  return table(rows);
}

/** Markdown for the README's Performance section. */
export function renderMarkdown(results: readonly ScenarioResult[]): string {
  const esc = (s: string | undefined): string => (s ?? '').replace(/\|/g, '\\|');
  const lines = ['| # | measure | certd | against | other | ratio | goal | met |', '|---|---|---|---|---|---|---|---|'];
  for (const r of results) {
    for (const row of r.rows) lines.push(`| ${r.id} | ${esc(row.measure)} | ${esc(row.certd)} | ${esc(row.against)} | ${esc(row.other)} | ${esc(row.ratio)} | ${esc(row.goal)} | ${metText(row.met)} |`);
  }
  return lines.join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { quick: { type: 'boolean' }, only: { type: 'string', multiple: true }, markdown: { type: 'boolean' } }, strict: true });
  const quick = values.quick === true;
  const only = (values.only ?? []).map(Number);
  const bad = only.filter((n) => !SCENARIOS.some((s) => s.id === n));
  if (bad.length > 0) {
    process.stderr.write(`bench: no scenario ${bad.join(', ')} (known: ${SCENARIOS.map((s) => s.id).join(', ')})\n`);
    return 2;
  }
  const chosen = only.length > 0 ? SCENARIOS.filter((s) => only.includes(s.id)) : SCENARIOS;
  const info = await machine();
  process.stdout.write(`certd benchmarks${quick ? ' (--quick)' : ''} on ${String(info['cpuModel'])}, ${String(info['cores'])} cores, ${String(info['memory'])}, node ${String(info['node'])}, ${String(info['date'])}, load average ${(info['loadAverage'] as number[]).join(' ')}\n\n`);
  const started = Date.now();
  const results: ScenarioResult[] = [];
  const failures: { id: number; title: string; error: string }[] = [];
  for (const s of chosen) {
    const t0 = Date.now();
    const log = (line: string): void => void process.stderr.write(`  [${s.id}] ${line}\n`);
    process.stderr.write(`scenario ${s.id}: ${s.title}\n`);
    try {
      const r = await s.run({ quick, log });
      const result: ScenarioResult = { id: s.id, title: s.title, ...r, figures: { ...r.figures, loadAverageAtEnd: loadavg().map((x) => Number(x.toFixed(2))) }, seconds: (Date.now() - t0) / 1000 };
      results.push(result);
      process.stdout.write(`${s.id}. ${s.title} (${result.seconds.toFixed(1)} s, load average ${loadavg()[0]?.toFixed(2)} at the end)\n   goal: ${result.goal}\n   met: ${metText(result.met)}\n`);
      for (const row of result.rows) {
        const cmp = row.against ? `; ${row.against}: ${row.other ?? ''}${row.ratio ? ` (${row.ratio})` : ''}` : '';
        const goal = row.goal ? `  [goal ${row.goal}: ${metText(row.met)}]` : '';
        process.stdout.write(`   - ${row.measure}: ${row.certd}${cmp}${goal}\n`);
      }
      for (const n of result.notes) process.stdout.write(`   note: ${n}\n`);
      process.stdout.write('\n');
    } catch (err) {
      const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
      failures.push({ id: s.id, title: s.title, error });
      process.stdout.write(`${s.id}. ${s.title}: could not run: ${err instanceof Error ? err.message : String(err)}\n\n`);
    }
  }
  const totalSeconds = (Date.now() - started) / 1000;
  process.stdout.write(`${renderTable(results)}\n\n`);
  process.stdout.write(`total ${totalSeconds.toFixed(1)} s\n`);
  if (values.markdown) process.stdout.write(`\n${renderMarkdown(results)}\n`);
  const out = join(ROOT, 'bench', 'results.json');
  writeFileSync(out, `${JSON.stringify({ machine: info, command: `npm run bench${quick ? ' -- --quick' : ''}${only.length ? ` -- ${only.map((n) => `--only ${n}`).join(' ')}` : ''}`, quick, totalSeconds, results, failures }, null, 2)}\n`);
  process.stdout.write(`results: ${out}\n`);
  return failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
