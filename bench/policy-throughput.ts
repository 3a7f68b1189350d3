/**
 * Scenario 1: policy check throughput.
 *
 * 1,000 distinct leaf + intermediate pairs (roots and intermediates made by the openssl CLI on
 * P-256, P-384 and RSA-2048 keys; leaves signed in this process). Three ways to check them:
 *   certd      parseBundle + checkPolicy per PEM bundle, the roots as trust anchors, in one process;
 *   scripted   a bash loop of `openssl verify -CAfile root -untrusted intermediate leaf` and
 *              `openssl x509 -noout -text -in leaf` per certificate (what users script today),
 *              over a subset, reported per certificate;
 *   bound      the same process doing the least any checker must: X509Certificate on both
 *              certificates of the bundle and one signature verification (the leaf's).
 * Goals: certd >= 50x the scripted loop, and within 2x of the bound.
 */
import { X509Certificate } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkPolicy } from '../src/policy/check.js';
import { parseBundle } from '../src/policy/pem.js';
import { DEFAULT_POLICY, type PolicySettings } from '../src/policy/types.js';
import { bundlePem, type BenchCa, makeCa, nowMs, pemToDer, rate, run, type Row, type Scenario, shm, times, verdict } from './common.js';

const CERT_END = '-----END CERTIFICATE-----';

/** The least a checker does: both certificates parsed by Node, the leaf's signature verified. */
function boundCheck(bundle: Buffer): boolean {
  const text = bundle.toString('utf8');
  const first = text.indexOf(CERT_END) + CERT_END.length;
  const leaf = new X509Certificate(text.slice(0, first));
  const issuer = new X509Certificate(text.slice(first));
  return leaf.verify(issuer.publicKey);
}

/** Checks per second over `items`, best of `rounds` passes (after one warm-up pass). */
function throughput(items: readonly Buffer[], rounds: number, check: (b: Buffer) => void): number {
  for (const b of items.slice(0, Math.min(100, items.length))) check(b);
  let best = 0;
  for (let r = 0; r < rounds; r++) {
    const t0 = nowMs();
    for (const b of items) check(b);
    best = Math.max(best, items.length / ((nowMs() - t0) / 1000));
  }
  return best;
}

export const policyThroughput: Scenario = {
  id: 1,
  title: 'Policy check throughput',
  async run({ quick, log }) {
    const count = quick ? 300 : 1000;
    const scripted = quick ? 30 : 100;
    const { dir, cleanup } = shm('policy');
    try {
      log(`making 3 CAs with openssl and ${count} leaves`);
      const cas: BenchCa[] = [await makeCa(dir, 'p256', 'ec-p256'), await makeCa(dir, 'p384', 'ec-p384'), await makeCa(dir, 'rsa', 'rsa-2048')];
      const pairs = [];
      for (let i = 0; i < count; i++) {
        const ca = cas[i % cas.length] as BenchCa;
        const m = await ca.issue([`host-${i}.bench.example`, `alt-${i}.bench.example`], i % 2 === 0 ? 'ec-p256' : 'ec-p384');
        pairs.push({ ca, m, chain: Buffer.from(m.fullchainPem), withKey: Buffer.from(bundlePem(m)) });
      }
      const policy: PolicySettings = { ...DEFAULT_POLICY, trustAnchors: cas.map((c) => pemToDer(c.rootPem)) };
      const now = new Date();
      let rejected = 0;
      const certdCheck = (b: Buffer): void => {
        const bundle = parseBundle(b);
        const findings = checkPolicy({ certs: bundle.certs, ...(bundle.keyPem ? { key: { kind: 'pem' as const, pem: bundle.keyPem } } : {}) }, policy, now);
        if (findings.some((f) => f.severity === 'reject')) rejected++;
      };
      const rounds = quick ? 2 : 3;
      log('certd: parseBundle + checkPolicy');
      const certdRate = throughput(pairs.map((p) => p.chain), rounds, certdCheck);
      const rejectedChains = rejected;
      rejected = 0;
      const certdKeyRate = throughput(pairs.map((p) => p.withKey), rounds, certdCheck);
      const rejectedWithKey = rejected;
      let unverified = 0;
      const boundRate = throughput(pairs.map((p) => p.chain), rounds, (b) => {
        if (!boundCheck(b)) unverified++;
      });

      // The scripted loop, over a subset written out as files (as a user would have them).
      const files = join(dir, 'scripted');
      mkdirSync(files);
      const lines: string[] = [];
      pairs.slice(0, scripted).forEach((p, i) => {
        const leaf = join(files, `leaf-${i}.pem`);
        writeFileSync(leaf, p.m.leafPem);
        lines.push(`${p.ca.rootPath} ${p.ca.intermediatePath} ${leaf}`);
      });
      writeFileSync(join(files, 'list'), `${lines.join('\n')}\n`);
      const script = `set -e\nok=0\nwhile read -r root int leaf; do\n  openssl verify -CAfile "$root" -untrusted "$int" "$leaf" >/dev/null\n  openssl x509 -noout -text -in "$leaf" >/dev/null\n  ok=$((ok+1))\ndone < "${join(files, 'list')}"\necho "$ok"\n`;
      log(`scripted: openssl verify + openssl x509 -text over ${scripted} certificates`);
      // Best of two runs, as certd and the bound get the best of their passes.
      let loopMs = Infinity;
      for (let r = 0; r < 2; r++) {
        const loop = await run(['bash', '-c', script], { timeoutMs: 300_000 });
        if (loop.code !== 0 || Number(loop.stdout.trim()) !== scripted) {
          throw new Error(`the openssl loop failed (the pairs must be X.509 openssl accepts): ${loop.stderr.trim().slice(0, 400)}`);
        }
        loopMs = Math.min(loopMs, loop.wallMs);
      }
      const loopRate = scripted / (loopMs / 1000);
      const vsLoop = certdRate / loopRate;
      const vsBound = boundRate / certdRate;
      const rows: Row[] = [
        { measure: 'certd checks (leaf + intermediate)', certd: rate(certdRate, 'cert'), against: `openssl verify + x509 -text loop (${scripted})`, other: rate(loopRate, 'cert'), ratio: times(vsLoop), goal: '>= 50x', met: vsLoop >= 50 },
        { measure: 'certd vs the bound of this machine', certd: rate(certdRate, 'cert'), against: 'X509Certificate x2 + 1 signature', other: rate(boundRate, 'cert'), ratio: `bound is ${times(vsBound)}`, goal: 'within 2x', met: vsBound <= 2 },
        { measure: 'certd checks with the key (P-KEYMATCH)', certd: rate(certdKeyRate, 'cert'), against: 'openssl loop (no key check)', other: rate(loopRate, 'cert'), ratio: times(certdKeyRate / loopRate) },
      ];
      const notes: string[] = [
        `the bound itself is ${times(boundRate / loopRate)} the scripted loop here: node ${process.version} decodes with OpenSSL ${process.versions.openssl}, whose X509Certificate takes ~0.5 ms per certificate`,
        'certd decodes and verifies an intermediate shared by many leaves once (a content-keyed cache of decoded certificates); the bound decodes both certificates every time',
      ];
      if (rejectedChains > 0 || rejectedWithKey > 0) notes.push(`certd rejected ${rejectedChains} chains / ${rejectedWithKey} bundles with key in the timed passes: these pairs should all pass; investigate`);
      if (unverified > 0) notes.push(`the bound failed to verify ${unverified} signatures`);
      return {
        goal: 'certd >= 50x a scripted openssl loop and within 2x of X509Certificate + one signature',
        met: verdict(rows),
        rows,
        figures: { count, scriptedCount: scripted, certdPerSecond: certdRate, certdWithKeyPerSecond: certdKeyRate, boundPerSecond: boundRate, scriptedPerSecond: loopRate, scriptedWallMs: loopMs, ratioVsScripted: vsLoop, boundOverCertd: vsBound, rejectedChains, rejectedWithKey },
        notes,
      };
    } finally {
      cleanup();
    }
  },
};
