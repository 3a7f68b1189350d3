/**
 * Hostile paths: a target dir with ".." is a config error; a target reached through a symlink
 * or a directory that another user controls is refused before anything is written (not even a
 * directory is created through it); per-SNI directory names derived from SANs can never leave
 * the layout's directory, whatever bytes a SAN holds (property test; the per-sni integration
 * test covers SNI lookups against nginx and a few refused SANs).
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { AtomicDir } from '../../providers/tmpfs.js';
import { checkDirChain } from '../../src/fsutil.js';
import { sniDirName } from '../../providers/sni-layout.js';
import { CertdError } from '../../src/errors.js';
import { uidOf } from '../../src/fsutil.js';
import { runCertd, shmDir, writeConfig } from '../helpers/cli.js';
import { TestPki } from '../helpers/pki.js';

const NOBODY = uidOf('nobody') ?? 65534;

function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('paths.test.ts creates files owned by another user (chown): run the tests as root');
}

/** Everything under `dir`, recursively, as relative paths. */
function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    out.push(e.name);
    if (e.isDirectory()) out.push(...tree(join(dir, e.name)).map((n) => `${e.name}/${n}`));
  }
  return out;
}

const files = (tag: string) => new Map([
  ['cert.pem', () => `cert ${tag}`],
  ['privkey.pem', () => `key ${tag}`],
]);

function refusedE_TARGET(pattern: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof CertdError, `expected a CertdError, got ${String(err)}`);
    assert.equal(err.code, 'E_TARGET');
    assert.equal(err.permanent, true, 'a redirected directory does not fix itself: the error must be permanent');
    assert.match(err.message, pattern);
    return true;
  };
}

describe('hostile target paths', () => {
  const scratch = shmDir('paths');
  const root = scratch.dir;
  const elsewhere = join(root, 'elsewhere');
  let pki: TestPki;
  let source: { cert: string; key: string; chain: string };

  before(() => {
    requireRoot();
    mkdirSync(elsewhere, { recursive: true });
    pki = new TestPki(join(root, 'pki'));
    source = pki.publish(pki.leaf('leaf', { dns: ['paths.certd.test'] }), join(root, 'source'));
    // Another user's directory with a symlink of theirs pointing elsewhere.
    const theirs = join(root, 'theirs');
    mkdirSync(theirs, { mode: 0o755 });
    chownSync(theirs, NOBODY, NOBODY);
    symlinkSync(elsewhere, join(theirs, 'link'));
    lchownSync(join(theirs, 'link'), NOBODY, NOBODY);
  });
  after(() => scratch.cleanup());

  const config = (dir: string) => writeConfig(root, `state_dir: ${join(root, 'state')}
policy: { trust_anchors: ${pki.root.certPath} }
certificates:
  - name: web
    source: { type: file, cert: ${source.cert}, key: ${source.key}, chain: ${source.chain} }
    targets:
      - { type: tmpfs, dir: "${dir}" }
`);

  it('a tmpfs dir with ".." segments is a configuration error naming the key (exit 2, nothing written)', async () => {
    // (join() would normalise the segments away: these strings are what a config file holds.)
    for (const dir of [`${root}/ok/../../escape`, '../escape', 'a/../../b', `${root}/..`]) {
      const r = await runCertd(['rotate', '--now', '--config', config(dir)]);
      assert.equal(r.code, 2, `${dir}: ${r.stderr}`);
      assert.match(r.stderr, /certificates\[0\]\.targets\[0\]\.dir \(line \d+\): must not contain "\.\." segments/);
    }
    assert.ok(!existsSync(join(root, '..', 'escape')) && !existsSync(join(root, 'escape')));
  });

  it('a symlink owned by another user on the way to the target dir: refused, nothing lands at its destination', async () => {
    const target = join(root, 'theirs', 'link', 'web');
    const r = await runCertd(['rotate', '--now', '--config', config(target), '--json']);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout) as { certificates: { result: string; error?: { code: string; message: string } }[] };
    assert.equal(report.certificates[0]?.result, 'failed');
    assert.equal(report.certificates[0]?.error?.code, 'E_TARGET');
    // Their directory is refused first (whoever owns it can swap the link); the link itself is refused below.
    assert.match(report.certificates[0]?.error?.message ?? '', new RegExp(`refused: ${join(root, 'theirs')}(/link)? is (a symlink )?owned by uid ${NOBODY}`));
    assert.deepEqual(tree(elsewhere), [], 'something was created at the symlink destination');
    const status = JSON.parse((await runCertd(['status', '--config', config(target), '--json'])).stdout) as { certificates: { lastResult: string; error: { code: string } | null; fingerprint: string | null }[] };
    assert.equal(status.certificates[0]?.lastResult, 'failed');
    assert.equal(status.certificates[0]?.error?.code, 'E_TARGET');
    assert.equal(status.certificates[0]?.fingerprint, null);
  });

  it('a symlink another user owns inside a root-owned directory is refused too', async () => {
    const mixed = join(root, 'mixed');
    mkdirSync(mixed);
    symlinkSync(elsewhere, join(mixed, 'link'));
    lchownSync(join(mixed, 'link'), NOBODY, NOBODY);
    await assert.rejects(
      new AtomicDir({ dir: join(mixed, 'link', 'web'), certMode: 0o644, keyMode: 0o600, allowDisk: false, certName: 'web' }).stage(files('x')),
      refusedE_TARGET(new RegExp(`${join(mixed, 'link')} is a symlink owned by uid ${NOBODY}, neither root nor certd`)),
    );
    assert.deepEqual(tree(elsewhere), []);
  });

  it('the same path through a symlink that root owns is accepted; its destination is checked too', async () => {
    const ours = join(root, 'ours');
    mkdirSync(ours);
    const dest = join(root, 'dest');
    mkdirSync(dest);
    symlinkSync(dest, join(ours, 'link'));
    const a = new AtomicDir({ dir: join(ours, 'link', 'web'), certMode: 0o644, keyMode: 0o600, allowDisk: false, certName: 'web' });
    await a.stage(files('1'));
    await a.commit();
    assert.ok(tree(dest).includes('web/privkey.pem'));
    // A root-owned symlink into a directory another user owns is no better.
    const theirDest = join(root, 'their-dest');
    mkdirSync(theirDest);
    chownSync(theirDest, NOBODY, NOBODY);
    symlinkSync(theirDest, join(ours, 'link2'));
    const b = new AtomicDir({ dir: join(ours, 'link2', 'web'), certMode: 0o644, keyMode: 0o600, allowDisk: false, certName: 'web' });
    await assert.rejects(b.stage(files('1')), refusedE_TARGET(new RegExp(`${theirDest} is owned by uid ${NOBODY}`)));
    assert.deepEqual(tree(theirDest), []);
  });

  it('a parent owned by another user, or writable by group or others without the sticky bit, is refused', async () => {
    const owned = join(root, 'owned');
    mkdirSync(owned);
    chownSync(owned, NOBODY, NOBODY);
    await assert.rejects(
      new AtomicDir({ dir: join(owned, 'web'), certMode: 0o644, keyMode: 0o600, allowDisk: false, certName: 'web' }).stage(files('x')),
      refusedE_TARGET(/is owned by uid 65534, neither root nor certd/),
    );
    assert.deepEqual(tree(owned), [], 'a directory was created inside it');
    for (const [mode, who] of [[0o777, 'group and others'], [0o775, 'its group'], [0o757, 'others']] as const) {
      const open = join(root, `open-${mode.toString(8)}`);
      mkdirSync(open);
      chmodSync(open, mode);
      await assert.rejects(
        new AtomicDir({ dir: join(open, 'web'), certMode: 0o644, keyMode: 0o600, allowDisk: false, certName: 'web' }).stage(files('x')),
        refusedE_TARGET(new RegExp(`is writable by ${who} \\(mode 0${mode.toString(8)}\\) without the sticky bit`)),
      );
      assert.deepEqual(tree(open), []);
    }
    const sticky = join(root, 'sticky');
    mkdirSync(sticky);
    chmodSync(sticky, 0o1777);
    const s = new AtomicDir({ dir: join(sticky, 'web'), certMode: 0o644, keyMode: 0o600, allowDisk: false, certName: 'web' });
    await s.stage(files('s'));
    await s.commit();
    assert.equal(lstatSync(join(sticky, 'web', 'privkey.pem')).isSymbolicLink(), true);
  });

  it('the target dir itself being a symlink is refused even when root owns it', async () => {
    const real = join(root, 'real');
    mkdirSync(real);
    symlinkSync(real, join(root, 'alias'));
    await assert.rejects(
      new AtomicDir({ dir: join(root, 'alias'), certMode: 0o644, keyMode: 0o600, allowDisk: false, certName: 'web' }).stage(files('x')),
      refusedE_TARGET(/alias is a symlink \(the target directory must be a real directory\)/),
    );
    assert.deepEqual(tree(real), []);
  });

  it('the check is cheap: 1,000 checks of a 6-deep path take well under a second', async () => {
    const deep = join(root, 'a', 'b', 'c', 'd');
    mkdirSync(deep, { recursive: true });
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) await checkDirChain(deep, 'timing');
    const ms = performance.now() - t0;
    console.log(`# checkDirChain: ${(ms / 1000).toFixed(3)} ms per check (${deep.split(sep).length - 1} components)`);
    assert.ok(ms < 5000, `1,000 checks took ${ms.toFixed(0)} ms`);
  });
});

describe('hostile SANs for the per-sni layout', () => {
  const base = '/run/certd-sni-root';
  /** A returned name must be one plain path component that stays inside the layout's directory. */
  const assertSafe = (san: string, name: string) => {
    assert.match(name, /^(_wildcard\.)?[a-z0-9-]+(\.[a-z0-9-]+)*$/, `${JSON.stringify(san)} -> ${JSON.stringify(name)}`);
    assert.notEqual(name, '..');
    assert.equal(resolve(base, name), join(base, name));
    assert.ok(!name.startsWith('_') || name.startsWith('_wildcard.'), `${JSON.stringify(san)} collides with certd's own names`);
    assert.ok(!['default', 'include', 'hostnames', 'volatile', 'certd-sni.conf'].includes(name), `${JSON.stringify(san)} -> reserved ${name}`);
  };

  it('refuses names that could escape or collide, beyond those the per-sni test covers', () => {
    const refused = [
      '', '.', '..', '...', 'a..b', '.a.test', 'a.test.', 'a\u0000b.test', 'a\\b.test', '%2e%2e', 'a/../../etc',
      '\uff41.test' /* fullwidth a */, 'caf\u00e9.test', 'a\u200b.test' /* zero-width space */, 'a b.test', 'a\n.test',
      '_fallback', '_wildcard.a.test', 'default', 'certd-sni.conf', 'include', '*', '*.', '*.*.a.test', 'a.*.test', '**.a.test',
      `${'a'.repeat(64)}.test`, `${'a.'.repeat(127)}ab`,
    ];
    for (const san of refused) {
      assert.throws(() => sniDirName(san), /is not plain DNS labels|reserved/, `${JSON.stringify(san)} was accepted`);
    }
    assert.equal(sniDirName('A.Example.TEST'), 'a.example.test');
    assert.equal(sniDirName('*.a.test'), '_wildcard.a.test');
    assert.equal(sniDirName('xn--caf-dma.test'), 'xn--caf-dma.test');
  });

  it('any string: refused, or one safe directory name (fast-check)', () => {
    const runs = process.env['CERTD_TEST_LONG'] === '1' ? 50_000 : 2_000;
    const label = fc.stringMatching(/^[a-zA-Z0-9_*.\-/\\%\u0000 ]{0,12}$/);
    const sanArb = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 80 }),
      fc.array(label, { maxLength: 6 }).map((ls) => ls.join('.')),
      fc.array(fc.constantFrom('a', 'b', '-', '.', '..', '/', '*', '_', 'xn--', '\u0000', 'default'), { maxLength: 12 }).map((p) => p.join('')),
    );
    fc.assert(
      fc.property(sanArb, (san) => {
        let name: string;
        try {
          name = sniDirName(san);
        } catch (err) {
          assert.match((err as Error).message, /is not plain DNS labels|reserved/);
          return;
        }
        assertSafe(san, name);
      }),
      { numRuns: runs },
    );
  });
});
