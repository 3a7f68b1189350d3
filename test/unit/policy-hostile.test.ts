/**
 * The parsers behind the RFC 5280 hardening rules, table-driven: EC point validation
 * (P-EC-POINT), DNS name syntax (P-SAN-SYNTAX) and name constraint matching
 * (P-NAME-CONSTRAINTS). The corpus runs each rule end to end through `certd validate`.
 */
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { ecPointProblem } from '../../src/policy/ec-point.js';
import { dnsNameProblem } from '../../src/policy/hostname.js';
import { nameConstraintProblem, type NameConstraints } from '../../src/policy/name-constraints.js';

function point(curve: string, form: 'uncompressed' | 'compressed'): Buffer {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
  const jwk = publicKey.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x as string, 'base64url');
  const y = Buffer.from(jwk.y as string, 'base64url');
  if (form === 'uncompressed') return Buffer.concat([Buffer.from([4]), x, y]);
  return Buffer.concat([Buffer.from([2 + ((y[y.length - 1] as number) & 1)]), x]);
}

describe('P-EC-POINT: partial public-key validation', () => {
  for (const curve of ['P-256', 'P-384', 'P-521']) {
    it(`${curve}: points OpenSSL generates pass, in both encodings; altered ones are refused`, () => {
      for (let i = 0; i < 5; i++) {
        const p = point(curve, 'uncompressed');
        assert.equal(ecPointProblem(curve, p), undefined);
        assert.equal(ecPointProblem(curve, point(curve, 'compressed')), undefined);
        const bad = Buffer.from(p);
        bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
        assert.match(ecPointProblem(curve, bad) ?? '', /not a point on/);
        // OpenSSL agrees that the altered point is no key.
        assert.throws(() => createPublicKey({ key: { kty: 'EC', crv: curve, x: bad.subarray(1, 1 + (bad.length - 1) / 2).toString('base64url'), y: bad.subarray(1 + (bad.length - 1) / 2).toString('base64url') }, format: 'jwk' }));
      }
      const size = curve === 'P-256' ? 32 : curve === 'P-384' ? 48 : 66;
      assert.match(ecPointProblem(curve, Buffer.from([0])) ?? '', /infinity/);
      assert.match(ecPointProblem(curve, Buffer.concat([Buffer.from([4]), Buffer.alloc(2 * size, 0xff)])) ?? '', /field prime/);
      assert.match(ecPointProblem(curve, Buffer.alloc(1 + size, 5)) ?? '', /starts with 0x05/);
      assert.match(ecPointProblem(curve, Buffer.concat([Buffer.from([4]), Buffer.alloc(size)])) ?? '', /bytes/);
    });
  }
  it('curves it does not validate are left to P-EC-CURVE', () => {
    assert.equal(ecPointProblem('secp256k1', Buffer.from([4, 1, 2])), undefined);
  });
});

describe('P-SAN-SYNTAX: DNS names in the preferred syntax', () => {
  const good = ['example.test', 'a.b.example.test', '*.apps.example.test', 'xn--bcher-kva.example.test', 'a-b.example.test', '0.example.test', `${'a'.repeat(63)}.test`];
  const bad: readonly [string, RegExp][] = [
    ['', /empty/], [' ', /empty/], ['a\u0000b.test', /control/], ['a.test\n', /control/], ['b\u00fccher.test', /A-labels/],
    ['"; } include /etc/passwd; #', /not letters/], ['_acme.example.test', /not letters/], ['-a.example.test', /not letters/],
    ['a-.example.test', /not letters/], ['a..test', /empty label/], ['example.test.', /ends with a dot/],
    ['f*.example.test', /wildcard/], ['a.*.example.test', /wildcard/], ['*.test', /top-level/], ['*', /top-level/],
    [`${'a'.repeat(64)}.test`, /64 characters/], [`${'abcdefghi.'.repeat(26)}test`, /over 253/], ['xn--zz.example.test', /punycode/], ['xn--0.example.test', /punycode/], ['xn--a.test', /punycode/],
  ];
  it('accepts host names', () => {
    for (const n of good) assert.equal(dnsNameProblem(n), undefined, n);
  });
  it('refuses each hostile form with a reason that quotes it safely', () => {
    for (const [n, why] of bad) {
      const problem = dnsNameProblem(n);
      assert.match(problem ?? 'accepted', why, JSON.stringify(n));
      assert.ok(!/[\u0000-\u001f]/.test(problem ?? ''), 'control characters are escaped in the message');
    }
  });
});

describe('P-NAME-CONSTRAINTS: subtree matching', () => {
  const nc = (over: Partial<NameConstraints>): NameConstraints => ({ critical: true, permitted: undefined, excluded: undefined, ...over });
  const v4 = (a: number[], m: number[]) => ({ address: Buffer.from(a), mask: Buffer.from(m) });
  it('DNS: labels are added on the left only; case does not matter; a leading dot means strictly below', () => {
    const c = nc({ permitted: { dns: ['allowed.test'], ip: [], other: 0 } });
    assert.equal(nameConstraintProblem('dns', 'allowed.test', c), undefined);
    assert.equal(nameConstraintProblem('dns', 'WWW.Allowed.Test', c), undefined);
    assert.equal(nameConstraintProblem('dns', '*.allowed.test', c), undefined);
    assert.match(nameConstraintProblem('dns', 'notallowed.test', c) ?? '', /outside the permitted/);
    const dot = nc({ permitted: { dns: ['.allowed.test'], ip: [], other: 0 } });
    assert.ok(nameConstraintProblem('dns', 'allowed.test', dot));
    assert.equal(nameConstraintProblem('dns', 'a.allowed.test', dot), undefined);
  });
  it('IP: address within address/mask; permitted IPv4 ranges alone keep IPv6 out; exclusion wins', () => {
    const c = nc({ permitted: { dns: [], ip: [v4([10, 0, 0, 0], [255, 0, 0, 0])], other: 0 }, excluded: { dns: [], ip: [v4([10, 9, 0, 0], [255, 255, 0, 0])], other: 0 } });
    assert.equal(nameConstraintProblem('ip', '10.1.2.3', c), undefined);
    assert.match(nameConstraintProblem('ip', '11.1.2.3', c) ?? '', /outside the permitted ranges \(10\.0\.0\.0\/8\)/);
    assert.match(nameConstraintProblem('ip', '10.9.1.1', c) ?? '', /excluded range 10\.9\.0\.0\/16/);
    assert.ok(nameConstraintProblem('ip', '::1', c));
    // DNS names are not constrained by IP subtrees.
    assert.equal(nameConstraintProblem('dns', 'anything.test', c), undefined);
  });
});
