// P-FIPS-RT's decision table with injected crypto functions, and what enforceFipsRuntime does
// with each fips_runtime mode.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  enforceFipsRuntime,
  MISSING_KERNEL,
  MISSING_MD5_REFUSAL,
  MISSING_PROVIDER,
  MISSING_SHA256,
  parseProviders,
  probeFips,
  type FipsProbeDeps,
} from '../../src/fips.js';
import { CertdError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';

const SHA256_ABC = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';
const refuse = (): never => {
  throw new Error('unsupported');
};

/** A FIPS host as the probe should see it; each row of the table breaks one fact. */
function fipsHost(over: Partial<FipsProbeDeps> = {}): FipsProbeDeps {
  return {
    getFips: () => 1,
    digest: (alg) => (alg === 'sha256' ? SHA256_ABC : refuse()),
    readKernelFlag: () => '1\n',
    opensslVersion: '3.0.9',
    env: {},
    ...over,
  };
}

function capture(): { log: ReturnType<typeof createLogger>; lines: () => Record<string, unknown>[] } {
  const out: string[] = [];
  return {
    log: createLogger({ level: 'debug', format: 'json', write: (l) => out.push(l) }),
    lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('the P-FIPS-RT probe (injected crypto)', () => {
  const rows: { name: string; deps: FipsProbeDeps; fips: boolean; missing: string[] }[] = [
    { name: 'everything in place', deps: fipsHost(), fips: true, missing: [] },
    {
      name: 'MD5 that works',
      deps: fipsHost({ digest: (alg) => (alg === 'sha256' ? SHA256_ABC : 'd41d8cd98f00b204e9800998ecf8427e') }),
      fips: false,
      missing: [MISSING_MD5_REFUSAL],
    },
    { name: 'getFips 1 but SHA-256 throws', deps: fipsHost({ digest: refuse }), fips: false, missing: [MISSING_SHA256] },
    { name: 'getFips 1 but SHA-256 gives a wrong digest', deps: fipsHost({ digest: (alg) => (alg === 'sha256' ? '00' : refuse()) }), fips: false, missing: [MISSING_SHA256] },
    { name: 'getFips 0 (no provider)', deps: fipsHost({ getFips: () => 0 }), fips: false, missing: [MISSING_PROVIDER] },
    { name: 'getFips throws', deps: fipsHost({ getFips: refuse }), fips: false, missing: [MISSING_PROVIDER] },
    { name: 'kernel flag 0', deps: fipsHost({ readKernelFlag: () => '0\n' }), fips: false, missing: [MISSING_KERNEL] },
    {
      name: 'no provider and no kernel flag',
      deps: fipsHost({ getFips: () => 0, digest: (alg) => (alg === 'sha256' ? SHA256_ABC : 'x'), readKernelFlag: () => null }),
      fips: false,
      missing: [MISSING_PROVIDER, MISSING_KERNEL],
    },
  ];
  for (const row of rows) {
    it(row.name, () => {
      const r = probeFips(row.deps);
      assert.equal(r.fips, row.fips);
      assert.equal(r.missing.length, row.missing.length, r.missing.join(' | '));
      row.missing.forEach((m, i) => assert.ok(r.missing[i]?.startsWith(m), `${r.missing[i]} should start with ${m}`));
    });
  }

  it('reports the kernel flag as 0, 1 or null', () => {
    assert.equal(probeFips(fipsHost()).kernel.fipsEnabled, 1);
    assert.equal(probeFips(fipsHost({ readKernelFlag: () => '0' })).kernel.fipsEnabled, 0);
    assert.equal(probeFips(fipsHost({ readKernelFlag: () => null })).kernel.fipsEnabled, null);
  });

  it('parses `openssl list -providers`', () => {
    const text = 'Providers:\n  default\n    name: OpenSSL Default Provider\n    version: 3.0.19\n    status: active\n  fips\n    name: OpenSSL FIPS Provider\n    version: 3.0.9\n    status: active\n';
    assert.deepEqual(parseProviders(text), [
      { name: 'default', status: 'active', fullName: 'OpenSSL Default Provider', version: '3.0.19' },
      { name: 'fips', status: 'active', fullName: 'OpenSSL FIPS Provider', version: '3.0.9' },
    ]);
  });

  it('levels: host (runtime + kernel flag), runtime (provider only), none', () => {
    assert.equal(probeFips(fipsHost()).level, 'host');
    const container = probeFips(fipsHost({ readKernelFlag: () => null }));
    assert.equal(container.level, 'runtime');
    assert.equal(container.runtimeFips, true);
    assert.equal(container.fips, false);
    assert.equal(probeFips(fipsHost({ getFips: () => 0, readKernelFlag: () => null })).level, 'none');
  });
});

describe('enforceFipsRuntime', () => {
  it('require-host: throws E_CONFIG naming the kernel flag when only the runtime is proven', () => {
    const c = capture();
    assert.throws(
      () => enforceFipsRuntime('require-host', c.log, fipsHost({ readKernelFlag: () => '0' })),
      (err: unknown) => err instanceof CertdError && err.code === 'E_CONFIG' && err.message.includes(MISSING_KERNEL) && err.details['rule'] === 'P-FIPS-RT',
    );
  });
  it('require: a proven runtime passes without the kernel flag (a container), and says so', () => {
    const c = capture();
    const r = enforceFipsRuntime('require', c.log, fipsHost({ readKernelFlag: () => null }));
    assert.equal(r?.level, 'runtime');
    assert.ok(c.lines().some((l) => /host kernel flag .*absent, not required/.test(String(l['msg']))), JSON.stringify(c.lines()));
  });
  it('require: throws E_CONFIG naming what is missing in the runtime, not the kernel', () => {
    const c = capture();
    assert.throws(
      () => enforceFipsRuntime('require', c.log, fipsHost({ getFips: () => 0, readKernelFlag: () => null })),
      (err: unknown) => err instanceof CertdError && err.code === 'E_CONFIG' && err.message.includes(MISSING_PROVIDER) && !err.message.includes(MISSING_KERNEL),
    );
  });
  it('require: passes on a FIPS host', () => {
    const c = capture();
    assert.equal(enforceFipsRuntime('require', c.log, fipsHost())?.fips, true);
  });
  it('auto: warns once and goes on', () => {
    const c = capture();
    const r = enforceFipsRuntime('auto', c.log, fipsHost({ getFips: () => 0 }));
    assert.equal(r?.fips, false);
    const warns = c.lines().filter((l) => l['level'] === 'warn');
    assert.equal(warns.length, 1);
    assert.equal(warns[0]?.['rule'], 'P-FIPS-RT');
  });
  it('off: probes nothing', () => {
    const c = capture();
    assert.equal(enforceFipsRuntime('off', c.log, fipsHost({ getFips: refuse, digest: refuse, readKernelFlag: refuse })), undefined);
    assert.equal(c.lines().length, 0);
  });
});
