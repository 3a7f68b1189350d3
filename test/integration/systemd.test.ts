// The systemd units, checked by systemd's own tools offline: `systemd-analyze verify` in a
// temporary root (systemd's unit tree, a stub /usr/bin/certd, the host's real nginx, kill and
// systemctl at the paths the units name), `systemd-analyze security --offline=true` for the
// exposure score, and systemd-sysusers + systemd-tmpfiles creating the user and /run/certd-deploy.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

const UNITS_DIR = resolve('systemd');
const UNITS = ['certd.service', 'certd-reload.path', 'certd-reload.service', 'certd-rotate.service', 'certd-rotate.timer'];
const MAX_EXPOSURE = 1.5;

function analyze(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('systemd-analyze', args, { encoding: 'utf8' });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error('systemd-analyze not found: install Debian\'s systemd package (apt-get install -y systemd)');
  }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** "→ Overall exposure level for certd.service: 1.0 OK 🙂" -> 1.0 */
function exposureOf(output: string): number {
  const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(output);
  if (!m) throw new Error(`no "Overall exposure level" in systemd-analyze output:\n${output}`);
  return Number(m[1]);
}

/** Absolute executables the units' Exec*= lines name (prefixes such as - @ : + ! stripped). */
function execPaths(): string[] {
  const paths = new Set<string>();
  for (const u of UNITS) {
    for (const line of readFileSync(join(UNITS_DIR, u), 'utf8').split('\n')) {
      const m = /^Exec\w+=[-@:+!]*(\/\S+)/.exec(line);
      if (m) paths.add(m[1]!);
    }
  }
  return [...paths];
}

describe('systemd units', () => {
  let root: string;

  before(() => {
    analyze(['--version']);
    root = mkdtempSync(join(tmpdir(), 'certd-systemd-'));
    // systemd's own unit tree, so that dependencies (sysinit.target, nginx.service ...) resolve.
    const systemUnits = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((d) => existsSync(join(d, 'sysinit.target')));
    assert.ok(systemUnits, 'systemd unit tree not found: apt-get install -y systemd');
    cpSync(systemUnits, join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
    mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
    for (const u of UNITS) copyFileSync(join(UNITS_DIR, u), join(root, 'etc/systemd/system', u));
    for (const p of execPaths()) {
      mkdirSync(join(root, dirname(p)), { recursive: true });
      if (p === '/usr/bin/certd') {
        // certd itself is not installed on a build machine: a stub stands at the documented path.
        writeFileSync(join(root, p), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
      } else {
        assert.ok(existsSync(p), `${p}, named by a unit, is not on this host (nginx: apt-get install -y nginx-light; kill: procps; systemctl: systemd)`);
        copyFileSync(p, join(root, p));
        chmodSync(join(root, p), 0o755);
      }
    }
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const verify = (unit: string): { status: number | null; stdout: string; stderr: string } => analyze(['verify', `--root=${root}`, unit]);

  for (const unit of UNITS) {
    it(`systemd-analyze verify ${unit}: no error, no warning`, () => {
      const r = verify(unit);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr.trim(), '', `warnings: ${r.stderr}`);
    });
  }

  it('the verify check can fail: a non-executable ExecStart and a misspelt key are caught', () => {
    const certd = join(root, 'usr/bin/certd');
    chmodSync(certd, 0o644);
    try {
      const r = verify('certd.service');
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /\/usr\/bin\/certd is not executable/);
    } finally {
      chmodSync(certd, 0o755);
    }
    const unitPath = join(root, 'etc/systemd/system/certd.service');
    const good = readFileSync(unitPath, 'utf8');
    writeFileSync(unitPath, good.replace(/^ProtectSystem=/m, 'ProtectSystm='));
    try {
      const r = verify('certd.service');
      assert.match(r.stderr, /Unknown key 'ProtectSystm'/);
    } finally {
      writeFileSync(unitPath, good);
    }
  });

  for (const unit of ['certd.service', 'certd-rotate.service']) {
    it(`systemd-analyze security --offline=true ${unit}: exposure <= ${MAX_EXPOSURE}`, () => {
      const r = analyze(['security', '--offline=true', join(UNITS_DIR, unit)]);
      assert.equal(r.status, 0, r.stderr);
      const score = exposureOf(r.stdout);
      assert.ok(score <= MAX_EXPOSURE, `exposure ${score} > ${MAX_EXPOSURE}:\n${r.stdout.split('\n').filter((l) => l.startsWith('✗')).join('\n')}`);
    });
  }

  it('the exposure check can fail: an unhardened unit scores above the limit', () => {
    const plain = join(root, 'plain.service');
    writeFileSync(plain, '[Service]\nType=notify\nExecStart=/usr/bin/certd run\n');
    const score = exposureOf(analyze(['security', '--offline=true', plain]).stdout);
    assert.ok(score > MAX_EXPOSURE, String(score));
  });

  it('the service runs unprivileged and reloads nginx only through the trigger file', () => {
    const unit = readFileSync(join(UNITS_DIR, 'certd.service'), 'utf8');
    assert.match(unit, /^Type=notify$/m);
    assert.match(unit, /^NotifyAccess=main$/m);
    assert.match(unit, /^ExecStart=\/usr\/bin\/certd run --config \/etc\/certd\/config\.yaml$/m);
    assert.match(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    assert.match(unit, /^WatchdogSec=\d+/m);
    assert.match(unit, /^RuntimeDirectory=certd$/m);
    assert.match(unit, /^RuntimeDirectoryMode=0700$/m);
    assert.match(unit, /^ReadWritePaths=\/run\/certd-deploy$/m);
    assert.match(unit, /^CapabilityBoundingSet=$/m);
    const path = readFileSync(join(UNITS_DIR, 'certd-reload.path'), 'utf8');
    assert.match(path, /^PathChanged=\/run\/certd-deploy\/reload\.trigger$/m);
    const reload = readFileSync(join(UNITS_DIR, 'certd-reload.service'), 'utf8');
    const execs = reload.split('\n').filter((l) => l.startsWith('ExecStart='));
    assert.deepEqual(execs, ['ExecStart=/usr/sbin/nginx -t -q', 'ExecStart=/usr/bin/systemctl reload nginx.service']);
  });

  it('sysusers.d creates the certd user and tmpfiles.d the deploy directory and trigger (in a temp root)', () => {
    const r1 = spawnSync('systemd-sysusers', [`--root=${root}`, join(UNITS_DIR, 'sysusers.d/certd.conf')], { encoding: 'utf8' });
    assert.equal(r1.status, 0, r1.stderr);
    const passwd = readFileSync(join(root, 'etc/passwd'), 'utf8');
    const entry = passwd.split('\n').find((l) => l.startsWith('certd:'));
    assert.ok(entry, passwd);
    const uid = Number(entry.split(':')[2]);
    assert.ok(uid > 0 && uid < 1000, `a system uid, got ${uid}`);
    mkdirSync(join(root, 'run'), { recursive: true });
    const r2 = spawnSync('systemd-tmpfiles', [`--root=${root}`, '--create', join(UNITS_DIR, 'tmpfiles.d/certd.conf')], { encoding: 'utf8' });
    assert.equal(r2.status, 0, r2.stderr);
    const dir = statSync(join(root, 'run/certd-deploy'));
    assert.equal(dir.mode & 0o777, 0o700);
    assert.equal(dir.uid, uid);
    const trigger = statSync(join(root, 'run/certd-deploy/reload.trigger'));
    assert.ok(trigger.isFile());
    assert.equal(trigger.mode & 0o777, 0o600);
    assert.equal(trigger.uid, uid);
    assert.deepEqual(readdirSync(join(root, 'run/certd-deploy')), ['reload.trigger']);
  });
});

describe('the documented install (systemd/README.md: scripts/install.sh)', () => {
  it('every file the units and the README name exists in the checkout', () => {
    for (const unit of UNITS) {
      const text = readFileSync(join(UNITS_DIR, unit), 'utf8');
      for (const m of text.matchAll(/\bsystemd\/([\w./-]+\.(?:md|conf|service|path|timer))/g)) {
        assert.ok(existsSync(join(UNITS_DIR, m[1] as string)), `${unit} names systemd/${m[1]}, which does not exist`);
      }
    }
    const readme = readFileSync(join(UNITS_DIR, 'README.md'), 'utf8');
    assert.match(readme, /scripts\/install\.sh/);
    assert.match(readme, /IPAddressAllow=/, 'the IPAddressDeny drop-in is documented');
  });

  it('installs real files: nothing points into the checkout (ProtectHome=yes), and the installed certd runs from elsewhere', { timeout: 600_000 }, () => {
    const prefix = mkdtempSync(join(tmpdir(), 'certd-install-'));
    try {
      const r = spawnSync('bash', ['scripts/install.sh', '--prefix', prefix, '--units'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      const bin = join(prefix, 'bin', 'certd');
      // Every symlink of the install resolves inside the prefix, never into this checkout.
      const links = spawnSync('find', [prefix, '-type', 'l'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l !== '');
      assert.ok(links.includes(bin), `${bin} is a link to the package`);
      for (const link of links) {
        const target = spawnSync('readlink', ['-f', link], { encoding: 'utf8' }).stdout.trim();
        assert.ok(target.startsWith(`${prefix}/`), `${link} -> ${target}: outside the install`);
        assert.ok(!target.startsWith(`${process.cwd()}/`), `${link} points into the checkout`);
      }
      // Run with the checkout out of sight: from / and with no access to anything but the prefix
      // named (the package finds its own dist/, package.json and native addons).
      const v = spawnSync(bin, ['--version'], { encoding: 'utf8', cwd: '/' });
      assert.equal(v.status, 0, v.stderr);
      assert.match(v.stdout, /^certd \d+\.\d+\.\d+/);
      const pkcs11 = spawnSync(process.execPath, ['-e', "require('pkcs11js')"], { cwd: join(prefix, 'lib', 'certd'), encoding: 'utf8' });
      assert.equal(pkcs11.status, 0, `pkcs11js built and loadable in the install: ${pkcs11.stderr}`);
      assert.ok(existsSync(join(prefix, 'lib', 'systemd', 'system', 'certd.service')));
      assert.ok(existsSync(join(prefix, 'share', 'doc', 'certd', 'systemd', 'README.md')), 'the README the unit refers to is installed');
      // Only production dependencies: no compiler, no test tooling.
      assert.equal(existsSync(join(prefix, 'lib', 'certd', 'node_modules', 'typescript')), false);
      assert.equal(existsSync(join(prefix, 'lib', 'certd', 'node_modules', 'fast-check')), false);
    } finally {
      rmSync(prefix, { recursive: true, force: true });
    }
  });
});
