#!/usr/bin/env node
// Runs the compiled tests with Node's own test runner.
//   node scripts/run-tests.mjs [unit|integration|all] [--long] [file-filter ...]
// Node 20 takes no globs after --test, so the file list is built here.
import { existsSync, mkdtempSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const suite = ['unit', 'integration', 'all'].includes(args[0] ?? '') ? args.shift() : 'all';
const long = args.includes('--long');
const filters = args.filter((a) => a !== '--long');
const roots = suite === 'all' ? ['unit', 'integration'] : [suite];

function walk(dir) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

// FIPS mode (CERTD_TEST_FIPS=1): every process of the run (the test files, the certd, openssl
// and nginx they start) loads the OpenSSL FIPS provider that scripts/fips-provider.sh builds, and
// Node runs with --enable-fips. Without file filters the run is the FIPS subset below: what
// touches crypto end to end, not the tests that assume a machine without a FIPS provider.
const fipsMode = process.env.CERTD_TEST_FIPS === '1';
const FIPS_SUBSET = [
  'unit/policy.test.js', 'unit/x509.test.js', 'unit/pem.test.js', 'unit/rotate.test.js',
  'integration/fips-provider.test.js', 'integration/aws-sources.test.js', 'integration/aws-pca.test.js', 'integration/keyval.test.js',
  'integration/apisix.test.js', 'integration/rotate-nginx.test.js',
  'integration/report.test.js', 'integration/verify.test.js', 'integration/pkcs11', 'integration/aws-fips-endpoint.test.js',
  'unit/fips-preflight', 'unit/local-ca-keys', 'zz-',
];
const fipsEnv = {};
if (fipsMode) {
  let dir = resolve(process.env.CERTD_FIPS_DIR || '.cache/ossl-fips');
  if (!existsSync(join(dir, 'fips.so')) || !existsSync(join(dir, 'openssl.cnf'))) {
    console.error(`CERTD_TEST_FIPS=1: no FIPS provider in ${dir}: run scripts/fips-provider.sh first`);
    process.exit(2);
  }
  // The real path: openssl.cnf names fipsmodule.cnf by it (.cache may be a link).
  dir = realpathSync(dir);
  fipsEnv.OPENSSL_CONF = join(dir, 'openssl.cnf');
  fipsEnv.OPENSSL_MODULES = dir;
  fipsEnv.CERTD_FIPS_DIR = dir;
  fipsEnv.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --enable-fips`.trim();
  if (filters.length === 0) filters.push(...FIPS_SUBSET);
}

const files = roots
  .flatMap((r) => {
    try { return walk(join('dist', 'test', r)); } catch { return []; }
  })
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error(`no compiled test files for "${suite}" ${filters.join(' ')}: run "npm run build" first`);
  process.exit(2);
}
// Every test process appends what certd printed and which secrets it made to this directory (on
// tmpfs: it holds test keys); the zz-* files check it after all the others have finished.
const ownCapture = !process.env.CERTD_TEST_CAPTURE_DIR;
const captureDir = process.env.CERTD_TEST_CAPTURE_DIR || mkdtempSync('/dev/shm/certd-test-capture-');
// Scratch files of this run alone: every test process gets it as TMPDIR, and the hygiene check
// searches it (and the directories tests register), not whatever else lives under /tmp.
const ownScratch = !process.env.CERTD_TEST_SCRATCH_DIR;
const scratchDir = process.env.CERTD_TEST_SCRATCH_DIR || mkdtempSync(join(tmpdir(), 'certd-testrun-'));
const env = {
  ...process.env,
  CERTD_TEST_LONG: long ? '1' : (process.env.CERTD_TEST_LONG ?? ''),
  CERTD_TEST_CAPTURE_DIR: captureDir,
  CERTD_TEST_SCRATCH_DIR: scratchDir,
  TMPDIR: scratchDir,
  ...fipsEnv,
};
// One run, one closing summary. Files run one at a time, in this order (integration tests start
// real servers, so ports and CPU are not contended), and the zz-* checks of everything the others
// printed run last.
const isLast = (f) => /[\\/]zz-[^\\/]*$/.test(f);
const ordered = [...files.filter((f) => !isLast(f)), ...files.filter(isLast)];
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--enable-source-maps', ...ordered], {
  stdio: 'inherit',
  env,
});
const status = r.status ?? 1;
if (ownCapture && !process.env.CERTD_TEST_KEEP_CAPTURE) rmSync(captureDir, { recursive: true, force: true });
if (ownScratch && !process.env.CERTD_TEST_KEEP_CAPTURE) rmSync(scratchDir, { recursive: true, force: true });
console.error(`ran ${files.length} test files${fipsMode ? ' in FIPS mode' : ''}: ${files.map((f) => relative('dist/test', f)).join(' ')}`);
process.exit(status);
