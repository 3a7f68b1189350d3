/**
 * Hostile input, property-based (fast-check): whatever bytes a source hands over, parseBundle
 * (PEM, JSON, DER) and Material.fromBundle either return a result or throw CertdError E_PARSE
 * (rule P-PARSE), and checkPolicy returns findings: never another exception, never a hang.
 * Inputs: arbitrary bytes; PEM with random labels, headers and base64 bodies, truncated; DER
 * with huge and indefinite length fields and deep nesting; JSON nested 10,000 deep, huge
 * strings; unicode in names and SANs; bit flips, truncations and length tampering of real
 * certificates made by openssl (test/helpers/pki.ts).
 *
 * 10,000 cases in all by default; CERTD_TEST_LONG=1 (npm test -- --long) runs 200,000.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { CertdError } from '../../src/errors.js';
import { Material } from '../../src/material.js';
import { checkPolicy } from '../../src/policy/check.js';
import { dnsNameProblem } from '../../src/policy/hostname.js';
import { nameConstraintProblem, parseNameConstraints } from '../../src/policy/name-constraints.js';
import { encodePem, MAX_INPUT_BYTES, parseBundle } from '../../src/policy/pem.js';
import { DEFAULT_POLICY, RULE_IDS, type PolicySettings } from '../../src/policy/types.js';
import { Secret } from '../../src/secret.js';
import { TestPki } from '../helpers/pki.js';

const LONG = process.env['CERTD_TEST_LONG'] === '1';
/** The share of the whole budget (10,000 or 200,000 cases) one property gets. */
const runs = (share: number): number => Math.round((LONG ? 200_000 : 10_000) * share);
/** Per case: generous for a loaded 2-core machine, far below anything that looks like a hang. */
const CASE_LIMIT_MS = 2_000;

const stats = { cases: 0, parsed: 0, refused: 0, maxMs: 0, maxWhat: '' };
const started = performance.now();

function timed<T>(what: string, fn: () => T): T {
  const t0 = performance.now();
  try {
    return fn();
  } finally {
    const ms = performance.now() - t0;
    if (ms > stats.maxMs) {
      stats.maxMs = ms;
      stats.maxWhat = what;
    }
    assert.ok(ms < CASE_LIMIT_MS, `${what} took ${ms.toFixed(0)} ms on one input`);
  }
}

/** parseBundle's contract on any input: a bundle of DER certificates and maybe a key, or E_PARSE. */
function parseOrRefuse(input: Buffer, what: string): void {
  stats.cases++;
  let result;
  try {
    result = timed(`parseBundle(${what})`, () => parseBundle(input));
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    assert.ok(err instanceof CertdError, `parseBundle(${what}) threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)} instead of CertdError`);
    assert.equal(err.code, 'E_PARSE', `parseBundle(${what}) threw ${err.code}`);
    assert.ok(!err.message.includes('PRIVATE KEY-----'), 'a parse error quotes the input');
    stats.refused++;
    return;
  }
  stats.parsed++;
  assert.ok(Array.isArray(result.certs));
  assert.ok(result.certs.length > 0 || result.keyPem !== undefined);
  for (const c of result.certs) assert.ok(Buffer.isBuffer(c));
  if (result.keyPem !== undefined) assert.ok(result.keyPem instanceof Secret);
  // What parsed goes on to Material, which must hold the same contract.
  try {
    timed(`Material.fromBundle(${what})`, () => Material.fromBundle(input, { version: 'fuzz', origin: 'fuzz' }));
  } catch (err) {
    assert.ok(err instanceof CertdError && err.code === 'E_PARSE', `Material.fromBundle(${what}) threw ${String(err)}`);
  }
}

/** checkPolicy's contract: findings with known rule ids, never an exception. */
function findings(certs: Buffer[], key: string | undefined, what: string, policy: PolicySettings = DEFAULT_POLICY): void {
  stats.cases++;
  const out = timed(`checkPolicy(${what})`, () =>
    checkPolicy({ certs, ...(key === undefined ? {} : { key: { kind: 'pem' as const, pem: new Secret(key) } }), hostnames: ['fuzz.certd.test', 'ünï.test'] }, policy, new Date()),
  );
  assert.ok(Array.isArray(out), `checkPolicy(${what}) returned ${typeof out}`);
  for (const f of out) {
    assert.ok((RULE_IDS as readonly string[]).includes(f.rule), `unknown rule ${f.rule}`);
    assert.ok(f.severity === 'reject' || f.severity === 'warn');
    assert.equal(typeof f.message, 'string');
    assert.ok(!f.message.includes('PRIVATE KEY-----'));
  }
}

// --- generators -------------------------------------------------------------------------------

const LABELS = ['CERTIFICATE', 'PRIVATE KEY', 'EC PRIVATE KEY', 'RSA PRIVATE KEY', 'ENCRYPTED PRIVATE KEY', 'X509 CERTIFICATE', 'EC PARAMETERS', 'DSA PRIVATE KEY', 'PUBLIC KEY', 'ÜNÏCODE', ''];

const b64Body = fc.oneof(
  fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b).toString('base64')),
  fc.string({ maxLength: 300 }), // not base64 at all
  fc.stringMatching(/^[A-Za-z0-9+/=\s]{0,400}$/),
);

const pemBlock = fc.record({
  label: fc.constantFrom(...LABELS),
  endLabel: fc.option(fc.constantFrom(...LABELS), { nil: undefined }),
  headers: fc.option(fc.constantFrom('Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n', 'Bag Attributes\n    localKeyID: 01\n', 'X: y\n'), { nil: undefined }),
  body: b64Body,
  cut: fc.option(fc.nat(), { nil: undefined }),
}).map(({ label, endLabel, headers, body, cut }) => {
  const text = `-----BEGIN ${label}-----\n${headers ?? ''}${body.replace(/(.{64})/g, '$1\n')}\n-----END ${endLabel ?? label}-----\n`;
  return cut === undefined ? text : text.slice(0, cut % (text.length + 1));
});

/** A DER length field: short, long form up to 8 bytes (huge), or indefinite (0x80). */
const derLength = fc.oneof(
  fc.nat({ max: 127 }).map((n) => Buffer.from([n])),
  fc.integer({ min: 1, max: 8 }).chain((n) => fc.uint8Array({ minLength: n, maxLength: n }).map((b) => Buffer.from([0x80 | n, ...b]))),
  fc.constant(Buffer.from([0x80])),
  fc.constant(Buffer.from([0x84, 0xff, 0xff, 0xff, 0xff])),
  fc.constant(Buffer.from([0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])),
);

const derTree: fc.Arbitrary<Buffer> = fc.letrec<{ node: Buffer }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.tuple(fc.constantFrom(0x02, 0x03, 0x04, 0x05, 0x06, 0x0c, 0x13, 0x16, 0x17, 0x18, 0x1e, 0x80, 0xa0, 0xa3), derLength, fc.uint8Array({ maxLength: 40 }))
      .map(([t, l, b]) => Buffer.concat([Buffer.from([t]), l, Buffer.from(b)])),
    fc.tuple(fc.constantFrom(0x30, 0x31, 0xa0, 0xa3), derLength, fc.array(tie('node'), { maxLength: 4 }))
      .map(([t, l, kids]) => Buffer.concat([Buffer.from([t]), l, ...kids])),
  ),
})).node;

/** Sequences nested `depth` deep, with correct or lying lengths. */
function deepDer(depth: number, honest: boolean): Buffer {
  // Headers from the inside out, joined once (concatenating per level would be quadratic).
  const headers: Buffer[] = [];
  let len = 2;
  for (let i = 0; i < depth; i++) {
    const lenBytes = !honest ? Buffer.from([0x84, 0xff, 0xff, 0xff, 0xf0]) : len < 128 ? Buffer.from([len]) : len < 256 ? Buffer.from([0x81, len]) : len < 65536 ? Buffer.from([0x82, len >> 8, len & 0xff]) : Buffer.from([0x83, len >> 16, (len >> 8) & 0xff, len & 0xff]);
    const header = Buffer.concat([Buffer.from([0x30]), lenBytes]);
    headers.push(header);
    len += header.length;
  }
  return Buffer.concat([...headers.reverse(), Buffer.from([0x05, 0x00])]);
}

const jsonDoc = fc.oneof(
  fc.jsonValue({ maxDepth: 6 }).map((v) => JSON.stringify(v)),
  fc.record({
    field: fc.constantFrom('certificate', 'cert', 'crt', 'Certificate', 'private_key', 'key', 'PrivateKey', 'chain', 'ca', 'CertificateChain', 'ünïcode'),
    value: fc.oneof(fc.jsonValue({ maxDepth: 3 }), pemBlock, fc.array(pemBlock, { maxLength: 3 }), pemBlock.map((p) => p.replace(/\n/g, '\\n'))),
    other: fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
  }).map(({ field, value, other }) => JSON.stringify({ ...other, [field]: value })),
  fc.integer({ min: 1, max: 10_000 }).map((d) => `{"certificate":${'['.repeat(d)}"x"${']'.repeat(d)}}`),
  fc.integer({ min: 1, max: 10_000 }).map((d) => `${'{"a":'.repeat(d)}1${'}'.repeat(d)}`),
  fc.integer({ min: 1, max: 10_000 }).map((d) => `{"certificate":${'['.repeat(d)}`), // unterminated
);

// --- the real material mutated ---------------------------------------------------------------

interface Real {
  leaf: Buffer;
  rsaLeaf: Buffer;
  unicodeLeaf: Buffer;
  intermediate: Buffer;
  root: Buffer;
  keyPem: string;
  rsaKeyPem: string;
  bundlePem: string;
}

let real: Real;
let scratch: string;

before(() => {
  scratch = mkdtempSync('/dev/shm/certd-fuzz-');
  const pki = new TestPki(join(scratch, 'pki'));
  const leaf = pki.leaf('leaf', { dns: ['fuzz.certd.test'] });
  const rsa = pki.leaf('rsa', { dns: ['fuzz.certd.test'], keySpec: 'rsa-2048' });
  // Unicode in the subject (UTF8String) and a SAN that IA5String should never carry.
  const uni = pki.leaf('unicode', {
    dns: ['x'],
    ext: 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:xn--nxasmq6b.test,email:ünï@certd.test,URI:https://ünï.test/',
  });
  const der = (pem: string) => new X509Certificate(pem).raw;
  const keyPem = readFileSync(leaf.keyPath, 'utf8');
  real = {
    leaf: der(leaf.certPem),
    rsaLeaf: der(rsa.certPem),
    unicodeLeaf: der(uni.certPem),
    intermediate: der(pki.intermediate.certPem),
    root: der(pki.root.certPem),
    keyPem,
    rsaKeyPem: readFileSync(rsa.keyPath, 'utf8'),
    bundlePem: `${keyPem}${leaf.certPem}${pki.intermediate.certPem}`,
  };
  assert.ok(createPrivateKey(keyPem));
});

after(() => {
  rmSync(scratch, { recursive: true, force: true });
  const s = (performance.now() - started) / 1000;
  console.log(`# fuzz: ${stats.cases} cases (${stats.parsed} parsed, ${stats.refused} refused with E_PARSE) in ${s.toFixed(1)} s; slowest ${stats.maxMs.toFixed(1)} ms: ${stats.maxWhat}`);
});

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'length'; at: number; value: number[] }
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'splice'; at: number; bytes: Uint8Array }
  | { kind: 'utf8'; at: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('length' as const), at: fc.nat(), value: fc.constantFrom<number[]>([0x84, 0xff, 0xff, 0xff, 0xff], [0x80], [0x00], [0x7f], [0x82, 0xff, 0xff], [0x88, 1, 2, 3, 4, 5, 6, 7, 8], [0x81, 0x00]) }),
  fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), value: fc.nat({ max: 255 }) }),
  fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ kind: fc.constant('utf8' as const), at: fc.nat() }),
);

/** Applies mutations; a `length` mutation overwrites the byte after a tag (where lengths live). */
function mutate(der: Buffer, ms: readonly Mutation[]): Buffer {
  let b = Buffer.from(der);
  for (const m of ms) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    switch (m.kind) {
      case 'flip':
        b[at] = (b[at] as number) ^ (1 << m.bit);
        break;
      case 'truncate':
        b = b.subarray(0, at);
        break;
      case 'length': {
        const pos = Math.min(at + 1, b.length);
        b = Buffer.concat([b.subarray(0, pos), Buffer.from(m.value), b.subarray(Math.min(pos + m.value.length, b.length))]);
        break;
      }
      case 'byte':
        b[at] = m.value;
        break;
      case 'splice':
        b = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]);
        break;
      case 'utf8': // a two-byte UTF-8 character where an IA5/Printable string may be
        b[at] = 0xc3;
        if (at + 1 < b.length) b[at + 1] = 0xa9;
        break;
    }
  }
  return b;
}

const pem = (der: Buffer) => encodePem('CERTIFICATE', der);

describe('hostile input never crashes the parsers or the policy (fast-check)', () => {
  it('arbitrary bytes', () => {
    // Half of them start with 0x30 (SEQUENCE), so they reach the DER certificate parser.
    const bytes = fc.oneof(fc.uint8Array({ maxLength: 4096 }), fc.uint8Array({ maxLength: 2048 }).map((b) => Uint8Array.from([0x30, ...b])));
    fc.assert(fc.property(bytes, (b) => parseOrRefuse(Buffer.from(b), 'bytes')), { numRuns: runs(0.12) });
  });

  it('arbitrary text, including text that starts like PEM or JSON', () => {
    const text = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 2000 }),
      fc.string({ maxLength: 200 }).map((s) => `-----BEGIN ${s}`),
      fc.string({ maxLength: 200 }).map((s) => `{${s}`),
      fc.string({ maxLength: 200 }).map((s) => `\u0030${s}`),
    );
    fc.assert(fc.property(text, (t) => parseOrRefuse(Buffer.from(t, 'utf8'), 'text')), { numRuns: runs(0.1) });
  });

  it('PEM blocks with random labels, headers and bodies, truncated anywhere, around real ones', () => {
    const doc = fc.tuple(fc.array(pemBlock, { maxLength: 4 }), fc.boolean(), fc.string({ maxLength: 40 }))
      .map(([blocks, withReal, junk]) => (withReal ? [...blocks, real.bundlePem] : blocks).join(junk));
    fc.assert(fc.property(doc, (t) => parseOrRefuse(Buffer.from(t, 'utf8'), 'pem')), { numRuns: runs(0.14) });
  });

  it('DER with huge, indefinite and lying length fields, nested', () => {
    fc.assert(fc.property(derTree, (d) => {
      parseOrRefuse(d, 'der');
      findings([d], undefined, 'der');
    }), { numRuns: runs(0.12) });
    for (const depth of [100, 1_000, 10_000, 100_000]) {
      for (const honest of [true, false]) {
        const d = deepDer(depth, honest);
        parseOrRefuse(d, `der nested ${depth} deep`);
        findings([d], undefined, `der nested ${depth} deep`);
      }
    }
  });

  it('JSON: random documents, certd fields with random values, nesting 10,000 deep, huge strings', () => {
    fc.assert(fc.property(jsonDoc, (t) => parseOrRefuse(Buffer.from(t, 'utf8'), 'json')), { numRuns: runs(0.12) });
    const big = 'A'.repeat(MAX_INPUT_BYTES - 64);
    for (const t of [
      JSON.stringify({ certificate: big }),
      JSON.stringify({ certificate: `-----BEGIN CERTIFICATE-----\n${big}\n-----END CERTIFICATE-----\n` }),
      JSON.stringify({ certificate: 'x'.repeat(MAX_INPUT_BYTES) }), // one byte over with the braces
      `-----BEGIN CERTIFICATE-----\n${big}`,
      '-----BEGIN '.repeat(90_000),
      `{"certificate":"${'\\n'.repeat(400_000)}"}`,
    ]) parseOrRefuse(Buffer.from(t, 'utf8'), `large input (${t.length} chars)`);
  });

  it('real certificates mutated (bit flips, truncation, length tampering, UTF-8 in strings), as DER, PEM and bundles', () => {
    const target = fc.constantFrom('leaf', 'rsaLeaf', 'unicodeLeaf', 'intermediate', 'root') as fc.Arbitrary<'leaf' | 'rsaLeaf' | 'unicodeLeaf' | 'intermediate' | 'root'>;
    fc.assert(fc.property(target, fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.nat({ max: 2 }), (which, ms, form) => {
      const m = mutate(real[which], ms);
      const input = form === 0 ? m : form === 1 ? Buffer.from(pem(m)) : Buffer.from(`${real.keyPem}${pem(m)}${pem(real.intermediate)}`);
      parseOrRefuse(input, `mutated ${which} as ${['DER', 'PEM', 'bundle'][form]}`);
    }), { numRuns: runs(0.2) });
  });

  it('checkPolicy on mutated chains and keys returns findings (P-PARSE for what does not parse), never throws', () => {
    const keyMutation = fc.tuple(fc.boolean(), fc.array(mutation, { maxLength: 2 }));
    fc.assert(fc.property(
      fc.constantFrom(0, 1, 2, 3),
      fc.array(mutation, { minLength: 0, maxLength: 3 }),
      keyMutation,
      fc.boolean(),
      (slot, ms, [mutateKey, kms], warnMode) => {
        const certs = [real.leaf, real.intermediate, real.root, real.rsaLeaf];
        certs[slot] = mutate(certs[slot] as Buffer, ms);
        let key = slot === 3 ? real.rsaKeyPem : real.keyPem;
        if (mutateKey) {
          const der = Buffer.from(key.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
          key = encodePem('PRIVATE KEY', mutate(der, kms));
        }
        const chain = slot === 3 ? [certs[3] as Buffer, real.intermediate] : certs.slice(0, 3);
        findings(chain, key, `policy slot ${slot}`, { ...DEFAULT_POLICY, mode: warnMode ? 'warn' : 'enforce', trustAnchors: [real.root] });
      },
    ), { numRuns: runs(0.2) });
  });

  it('the properties ran the number of cases the budget asks for', () => {
    // The fixed cases above come on top of the random ones.
    assert.ok(stats.cases >= runs(1), `${stats.cases} cases < ${runs(1)}`);
  });
});

/** A DER element, for building name constraints by hand. */
function derTlv(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), content]);
}

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/);
const dnsName = fc.array(label, { minLength: 1, maxLength: 5 }).map((ls) => ls.join('.'));

describe('name constraints and DNS name syntax hold against hostile input (fast-check)', () => {
  it('parseNameConstraints returns constraints or throws an Error on any bytes, never hangs', () => {
    const subtree = fc.oneof(
      dnsName.map((n) => derTlv(0x30, derTlv(0x82, Buffer.from(n)))),
      fc.uint8Array({ minLength: 0, maxLength: 40 }).map((b) => derTlv(0x30, derTlv(0x87, Buffer.from(b)))),
      fc.uint8Array({ maxLength: 60 }).map((b) => derTlv(0x30, Buffer.from(b))),
    );
    const nc = fc.tuple(fc.array(subtree, { maxLength: 6 }), fc.array(subtree, { maxLength: 6 }), fc.array(mutation, { maxLength: 2 }))
      .map(([p, e, ms]) => {
        const parts = [p.length ? derTlv(0xa0, Buffer.concat(p)) : Buffer.alloc(0), e.length ? derTlv(0xa1, Buffer.concat(e)) : Buffer.alloc(0)];
        return mutate(derTlv(0x30, Buffer.concat(parts)), ms);
      });
    const bytes = fc.oneof(nc, fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)));
    fc.assert(fc.property(bytes, fc.string({ maxLength: 60 }), (b, name) => {
      let parsed;
      try {
        parsed = parseNameConstraints(b, true);
      } catch (err) {
        assert.ok(err instanceof Error && !(err instanceof assert.AssertionError), String(err));
        return;
      }
      assert.ok(parsed.permitted !== undefined || parsed.excluded !== undefined);
      // Any name gets an answer: a reason or undefined.
      const problem = nameConstraintProblem('dns', name, parsed);
      assert.ok(problem === undefined || typeof problem === 'string');
    }), { numRuns: 3_000 });
  });

  it('a name with labels added to the left of a permitted base stays permitted; anything else outside is refused', () => {
    fc.assert(fc.property(dnsName, fc.array(label, { maxLength: 3 }), dnsName, (base, extra, other) => {
      const nc = parseNameConstraints(derTlv(0x30, derTlv(0xa0, derTlv(0x30, derTlv(0x82, Buffer.from(base))))), true);
      const inside = [...extra, base].join('.');
      assert.equal(nameConstraintProblem('dns', inside, nc), undefined, `${inside} under ${base}`);
      assert.equal(nameConstraintProblem('dns', inside.toUpperCase(), nc), undefined);
      if (other !== base && !other.endsWith(`.${base}`)) assert.ok(nameConstraintProblem('dns', other, nc), `${other} outside ${base}`);
      // "badexample.test" is not within "example.test": labels, not characters.
      assert.ok(nameConstraintProblem('dns', `x${base}`, nc));
      // Exclusion wins, and a wildcard reaching an excluded name counts.
      const ex = parseNameConstraints(derTlv(0x30, Buffer.concat([
        derTlv(0xa0, derTlv(0x30, derTlv(0x82, Buffer.from(base)))),
        derTlv(0xa1, derTlv(0x30, derTlv(0x82, Buffer.from(`evil.${base}`)))),
      ])), true);
      assert.ok(nameConstraintProblem('dns', `a.evil.${base}`, ex));
      assert.ok(nameConstraintProblem('dns', `*.${base}`, ex));
    }), { numRuns: 1_000 });
  });

  it('dnsNameProblem accepts LDH names and refuses every name with a character outside them', () => {
    fc.assert(fc.property(dnsName, (n) => {
      fc.pre(n.split('.').every((l) => l.length <= 63) && n.length <= 253);
      // An xn-- label is an A-label and must be valid punycode: the generator's are mostly not.
      if (n.split('.').some((l) => /^xn--/i.test(l))) return;
      assert.equal(dnsNameProblem(n), undefined, n);
      if (n.split('.').length >= 2) assert.equal(dnsNameProblem(`*.${n}`), undefined);
    }), { numRuns: 1_000 });
    fc.assert(fc.property(dnsName, fc.nat({ max: 100 }), fc.string({ unit: 'binary', minLength: 1, maxLength: 3 }), (n, at, ins) => {
      fc.pre(/[^a-z0-9.-]/i.test(ins));
      const pos = at % (n.length + 1);
      const bad = n.slice(0, pos) + ins + n.slice(pos);
      fc.pre(!/^\*\.[^*]+$/.test(bad));
      assert.ok(dnsNameProblem(bad), `accepted ${JSON.stringify(bad)}`);
    }), { numRuns: 3_000 });
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 400 }), (s) => {
      const problem = dnsNameProblem(s);
      if (problem === undefined) assert.match(s, /^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*$/i);
    }), { numRuns: 3_000 });
  });
});
