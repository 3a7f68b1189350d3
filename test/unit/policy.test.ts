import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { rootCertificates } from 'node:tls';
import { describe, it } from 'node:test';
import { isCertdError } from '../../src/errors.js';
import { Secret } from '../../src/secret.js';
import { chainsToPublicRoot } from '../../src/policy/chain.js';
import { checkPolicy, isRejected, publicLifetimeLimitDays } from '../../src/policy/check.js';
import { hostnameMatches, normalizeIp } from '../../src/policy/hostname.js';
import { parseBundle } from '../../src/policy/pem.js';
import { loadPrivateKeyPem } from '../../src/policy/private-key.js';
import { DEFAULT_POLICY, RULE_IDS } from '../../src/policy/types.js';
import type { Finding, PolicyInput, PolicySettings, RuleId } from '../../src/policy/types.js';
import { describeCertificate, parseCertificate } from '../../src/policy/x509.js';
import { buildCorpus, CORPUS_PASSPHRASE } from '../fixtures/corpus.js';
import type { CorpusCase } from '../fixtures/corpus.js';
import { fixtureEnv } from '../helpers/fixture-env.js';

const corpus = await buildCorpus();
const DAY = 86_400_000;

function byName(name: string): CorpusCase {
  const c = corpus.cases.find((x) => x.name === name);
  assert.ok(c, `corpus case ${name} exists`);
  return c;
}

/** What `certd validate` will do: parse the files, then run the policy. */
function load(c: CorpusCase): { input: PolicyInput; policy: PolicySettings } {
  const parts = [readFileSync(c.files.cert)];
  if (c.files.chain) parts.push(readFileSync(c.files.chain));
  const { certs } = parseBundle(Buffer.concat(parts));
  let key: PolicyInput['key'];
  if (c.files.key) {
    const pem = parseBundle(readFileSync(c.files.key)).keyPem;
    assert.ok(pem, `${c.name}: key.pem holds a key`);
    key = { kind: 'pem', pem, passphrase: c.passphrase === undefined ? undefined : new Secret(c.passphrase) };
  }
  const trustAnchors = c.files.root ? parseBundle(readFileSync(c.files.root)).certs : [];
  return {
    input: { certs, key, hostnames: c.hostnames },
    policy: { ...DEFAULT_POLICY, trustAnchors, ...c.policy },
  };
}

function evaluate(c: CorpusCase, now = new Date()): Finding[] {
  let loaded;
  try {
    loaded = load(c);
  } catch (err) {
    // Unparseable input never reaches the policy: the parser's E_PARSE is rule P-PARSE.
    assert.ok(isCertdError(err, 'E_PARSE'), `${c.name}: expected CertdError E_PARSE, got ${String(err)}`);
    return [{ rule: 'P-PARSE', severity: 'reject', cert: 0, message: err.message }];
  }
  return checkPolicy(loaded.input, loaded.policy, now);
}

const show = (findings: readonly Finding[]): string =>
  findings.map((f) => `\n  ${f.rule} ${f.severity} [${f.cert}] ${f.message}`).join('') || ' (none)';

describe('policy corpus (certificates made by openssl)', () => {
  for (const c of corpus.cases) {
    const title = c.expect === 'pass' ? `${c.name}: ${c.about} passes` : `${c.name}: ${c.about} -> ${c.expect} (${c.severity})`;
    it(title, () => {
      const findings = evaluate(c);
      if (c.expect === 'pass') {
        assert.deepEqual(findings, [], `expected no finding, got:${show(findings)}`);
        return;
      }
      assert.ok(
        findings.some((f) => f.rule === c.expect && f.severity === c.severity),
        `expected ${c.expect} (${c.severity}), got:${show(findings)}`,
      );
      if (c.severity === 'warn') {
        assert.equal(isRejected(findings, DEFAULT_POLICY), false, `a warning case must not be rejected:${show(findings)}`);
      } else {
        assert.equal(isRejected(findings, DEFAULT_POLICY), true);
      }
    });
  }

  it('has a case for every rule id', () => {
    const covered = new Set(corpus.cases.map((c) => c.expect));
    const missing = RULE_IDS.filter((r) => !covered.has(r));
    assert.deepEqual(missing, []);
  });

  it('never puts key material into a finding', () => {
    for (const c of corpus.cases) {
      if (!c.files.key) continue;
      const keyText = readFileSync(c.files.key, 'utf8');
      const body = keyText.split('\n').filter((l) => /^[A-Za-z0-9+/=]{40,}$/.test(l));
      for (const f of evaluate(c)) {
        assert.ok(!f.message.includes('PRIVATE KEY-----'), `${c.name}: ${f.message}`);
        for (const line of body) assert.ok(!f.message.includes(line.slice(0, 32)), `${c.name}: key bytes in ${f.rule}`);
      }
    }
  });
});

describe('policy: host names (P-SAN)', () => {
  const dns = ['leaf.example.test', '*.apps.example.test', 'xn--bcher-kva.example'];
  const ips = ['127.0.0.1', '::1', '2001:db8::10'];
  const cases: [string, boolean][] = [
    ['leaf.example.test', true],
    ['LEAF.Example.TEST', true],
    ['leaf.example.test.', true],
    ['api.apps.example.test', true],
    ['API.APPS.example.test', true],
    ['a.b.apps.example.test', false], // a wildcard covers one label only
    ['apps.example.test', false], // nor the name it hangs off
    ['other.example.test', false],
    ['bücher.example', true], // IDN compared in punycode
    ['*.apps.example.test', true], // a wildcard host needs the same wildcard SAN
    ['*.example.test', false],
    ['127.0.0.1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['[::1]', true],
    ['2001:0db8:0000::0010', true],
    ['127.0.0.2', false],
    ['', false],
  ];
  for (const [host, expected] of cases) {
    it(`${JSON.stringify(host)} ${expected ? 'matches' : 'does not match'}`, () => {
      assert.equal(hostnameMatches(host, dns, ips), expected);
    });
  }

  it('an IP address never matches a DNS SAN spelling it', () => {
    assert.equal(hostnameMatches('10.0.0.1', ['10.0.0.1'], []), false);
  });

  it('a wildcard never stands for a whole top-level domain', () => {
    assert.equal(hostnameMatches('example.com', ['*.com'], []), false);
  });

  it('normalises IPv6 with an embedded IPv4 tail', () => {
    assert.equal(normalizeIp('::ffff:192.0.2.1'), normalizeIp('0:0:0:0:0:ffff:c000:201'));
    assert.equal(normalizeIp('not-an-ip'), undefined);
  });

  it('reports each configured host name the leaf does not cover', () => {
    const { input, policy } = load(byName('p-256'));
    const findings = checkPolicy({ ...input, hostnames: ['leaf.example.test', 'x.example.test', '10.1.1.1'] }, policy, new Date());
    assert.deepEqual(
      findings.map((f) => [f.rule, f.severity]),
      [['P-SAN', 'reject'], ['P-SAN', 'reject']],
    );
    assert.match(findings[0]?.message ?? '', /"x\.example\.test"/);
    assert.match(findings[1]?.message ?? '', /"10\.1\.1\.1"/);
  });
});

describe('policy: time (P-VALID, P-MIN-REMAINING, P-EXPIRING, P-LIFE-*)', () => {
  const good = load(byName('p-256'));
  const leaf = describeCertificate(good.input.certs[0] as Buffer);
  const notBefore = Date.parse(leaf.notBefore);
  const notAfter = Date.parse(leaf.notAfter);
  const at = (t: number, policy: Partial<PolicySettings> = {}): RuleId[] =>
    checkPolicy(good.input, { ...good.policy, ...policy }, new Date(t)).map((f) => f.rule);

  it('a 90-day leaf one day in raises nothing', () => {
    assert.deepEqual(at(notBefore + DAY), []);
  });

  it('warns P-EXPIRING under renew_before', () => {
    const findings = checkPolicy(good.input, good.policy, new Date(notAfter - 20 * DAY));
    assert.deepEqual(findings.map((f) => [f.rule, f.severity]), [['P-EXPIRING', 'warn']]);
    assert.match(findings[0]?.message ?? '', /renew_before/);
  });

  it('warns P-EXPIRING under a third of the lifetime even with a short renew_before', () => {
    const findings = checkPolicy(good.input, { ...good.policy, renewBeforeMs: DAY }, new Date(notAfter - 25 * DAY));
    assert.deepEqual(findings.map((f) => f.rule), ['P-EXPIRING']);
    assert.match(findings[0]?.message ?? '', /third of its/);
    assert.deepEqual(at(notAfter - 35 * DAY, { renewBeforeMs: DAY }), []);
  });

  it('rejects P-MIN-REMAINING (and not P-EXPIRING) inside min_remaining', () => {
    assert.deepEqual(at(notAfter - 3 * DAY), ['P-MIN-REMAINING']);
    assert.deepEqual(at(notAfter - 3 * DAY, { minRemainingMs: 2 * DAY }), ['P-EXPIRING']);
  });

  it('P-VALID allows five minutes of skew at both ends', () => {
    const leafRules = (t: number): RuleId[] =>
      checkPolicy(good.input, good.policy, new Date(t)).filter((f) => f.cert === 0).map((f) => f.rule);
    assert.deepEqual(leafRules(notAfter + 4 * 60_000), ['P-MIN-REMAINING']);
    assert.deepEqual(leafRules(notAfter + 6 * 60_000), ['P-VALID']);
    // The intermediate was issued moments before the leaf, so only the leaf is looked at here.
    assert.deepEqual(leafRules(notBefore - 4 * 60_000), []);
    assert.deepEqual(leafRules(notBefore - 6 * 60_000), ['P-VALID']);
  });

  it('P-VALID covers every certificate of the chain, not only the leaf', () => {
    const intermediate = describeCertificate(good.input.certs[1] as Buffer);
    const findings = checkPolicy(good.input, good.policy, new Date(Date.parse(intermediate.notAfter) + DAY));
    assert.ok(findings.some((f) => f.rule === 'P-VALID' && f.cert === 1), show(findings));
  });

  it('P-LIFE-FIPS warns on a leaf over three years', () => {
    const long = load(byName('long-life'));
    const start = Date.parse(describeCertificate(long.input.certs[0] as Buffer).notBefore);
    const findings = checkPolicy(long.input, long.policy, new Date(start + DAY));
    assert.deepEqual(findings.map((f) => [f.rule, f.severity]), [['P-LIFE-FIPS', 'warn']]);
  });

  it('CA/B lifetime limits change on the SC-081 dates', () => {
    assert.equal(publicLifetimeLimitDays(new Date('2026-03-14T23:59:59Z')), 398);
    assert.equal(publicLifetimeLimitDays(new Date('2026-03-15T00:00:00Z')), 200);
    assert.equal(publicLifetimeLimitDays(new Date('2027-03-14T23:59:59Z')), 200);
    assert.equal(publicLifetimeLimitDays(new Date('2027-03-15T00:00:00Z')), 100);
    assert.equal(publicLifetimeLimitDays(new Date('2029-03-15T00:00:00Z')), 47);
  });

  it('P-LIFE-PUBLIC follows policy.publicTrust, else whether the chain reaches a public root', () => {
    const c = load(byName('public-life'));
    const start = Date.parse(describeCertificate(c.input.certs[0] as Buffer).notBefore);
    const rules = (publicTrust: boolean | undefined): RuleId[] =>
      checkPolicy(c.input, { ...c.policy, publicTrust }, new Date(start + DAY)).map((f) => f.rule);
    assert.deepEqual(rules(true), ['P-LIFE-PUBLIC']);
    assert.deepEqual(rules(false), []);
    assert.deepEqual(rules(undefined), [], 'a private corpus root is not publicly trusted');
  });

  it('recognises a chain that ends at a root of the bundled Mozilla store', () => {
    const pem = rootCertificates.find((p) => {
      try {
        parseCertificate(new X509Certificate(p).raw);
        return true;
      } catch {
        return false;
      }
    });
    assert.ok(pem, 'Node ships root certificates');
    const publicRoot = parseCertificate(new X509Certificate(pem).raw);
    assert.equal(chainsToPublicRoot([publicRoot]), true);
    const privateChain = load(byName('p-256')).input.certs.map(parseCertificate);
    assert.equal(chainsToPublicRoot(privateChain), false);
  });
});

describe('policy: modes and failures', () => {
  it('mode warn keeps the findings but rejects nothing', () => {
    const c = load(byName('rsa-1024'));
    const warnPolicy: PolicySettings = { ...c.policy, mode: 'warn' };
    const findings = checkPolicy(c.input, warnPolicy, new Date());
    assert.ok(findings.some((f) => f.rule === 'P-RSA-MIN' && f.severity === 'reject'));
    assert.equal(isRejected(findings, warnPolicy), false);
    assert.equal(isRejected(findings, c.policy), true);
  });

  it('warnings alone never reject', () => {
    const warn: Finding = { rule: 'P-EXPIRING', severity: 'warn', cert: 0, message: 'x' };
    assert.equal(isRejected([warn], DEFAULT_POLICY), false);
    assert.equal(isRejected([], DEFAULT_POLICY), false);
  });

  it('turns bytes that are not certificates into P-PARSE instead of throwing', () => {
    const good = load(byName('p-256')).input.certs;
    const findings = checkPolicy({ certs: [Buffer.from('garbage'), ...good.slice(1)] }, DEFAULT_POLICY, new Date());
    assert.deepEqual(findings.map((f) => [f.rule, f.cert]), [['P-PARSE', 0]]);
    const truncated = (good[1] as Buffer).subarray(0, 100);
    const findings2 = checkPolicy({ certs: [good[0] as Buffer, truncated] }, DEFAULT_POLICY, new Date());
    assert.ok(findings2.some((f) => f.rule === 'P-PARSE' && f.cert === 1), show(findings2));
    assert.deepEqual(checkPolicy({ certs: [] }, DEFAULT_POLICY, new Date()).map((f) => f.rule), ['P-PARSE']);
  });

  it('reports an unreadable trust anchor under P-CHAIN-ANCHOR', () => {
    const c = load(byName('p-256'));
    const findings = checkPolicy(c.input, { ...c.policy, trustAnchors: [Buffer.from('nope')] }, new Date());
    assert.ok(findings.some((f) => f.rule === 'P-CHAIN-ANCHOR' && f.severity === 'reject'), show(findings));
  });

  it('accepts the chain when its last certificate is issued by the anchor (root not bundled)', () => {
    const c = load(byName('p-256'));
    assert.equal(c.input.certs.length, 2);
    assert.deepEqual(checkPolicy(c.input, c.policy, new Date()), []);
    const withRoot = { ...c.input, certs: [...c.input.certs, ...c.policy.trustAnchors] };
    assert.deepEqual(checkPolicy(withRoot, c.policy, new Date()), []);
  });

  it('without trust anchors a correct chain passes and a broken one fails P-CHAIN-ORDER', () => {
    const good = load(byName('two-intermediates'));
    assert.deepEqual(checkPolicy(good.input, { ...good.policy, trustAnchors: [] }, new Date()), []);
    const bad = load(byName('chain-reversed'));
    const findings = checkPolicy(bad.input, { ...bad.policy, trustAnchors: [] }, new Date());
    assert.ok(findings.length > 0 && findings.every((f) => f.rule === 'P-CHAIN-ORDER'), show(findings));
  });

  it('min_rsa_bits raises the floor: RSA-2048 fails at 3072', () => {
    const c = load(byName('rsa-2048'));
    const findings = checkPolicy(c.input, { ...c.policy, minRsaBits: 3072 }, new Date());
    assert.ok(findings.some((f) => f.rule === 'P-RSA-MIN' && f.severity === 'reject' && f.cert === 0), show(findings));
  });

  it('P-SIG-STRENGTH holds for intermediates even when min_rsa_bits is lowered', () => {
    const c = load(byName('weak-intermediate'));
    const findings = checkPolicy(c.input, { ...c.policy, minRsaBits: 1024 }, new Date());
    const rejects = findings.filter((f) => f.severity === 'reject');
    assert.deepEqual(rejects.map((f) => [f.rule, f.cert]), [['P-SIG-STRENGTH', 1]], show(findings));
  });

  it('messages name the certificate and the fix', () => {
    const findings = evaluate(byName('rsa-1024'));
    assert.equal(
      findings.find((f) => f.rule === 'P-RSA-MIN')?.message,
      'leaf: RSA modulus is 1024 bits; FIPS needs at least 2048 (SP 800-131A r2): reissue with a 2048/3072/4096-bit key',
    );
    const chain = evaluate(byName('int-not-ca'));
    assert.match(chain[0]?.message ?? '', /^certificate 1 \(Not-a-CA Issuing CA\)/);
  });
});

describe('policy: private keys (P-KEY-PEM, P-KEYMATCH)', () => {
  it('a PBES2 key loads with its passphrase, not with a wrong one', () => {
    const c = load(byName('pbes2-key'));
    assert.deepEqual(checkPolicy(c.input, c.policy, new Date()), []);
    const key = c.input.key;
    assert.ok(key?.kind === 'pem');
    const wrong = checkPolicy({ ...c.input, key: { ...key, passphrase: new Secret('wrong') } }, c.policy, new Date());
    assert.deepEqual(wrong.map((f) => f.rule), ['P-KEY-PEM']);
    assert.match(wrong[0]?.message ?? '', /does not decrypt/);
  });

  it('legacy Proc-Type encryption is refused even with the right passphrase', () => {
    const c = byName('legacy-encrypted-key');
    assert.match(readFileSync(c.files.key as string, 'utf8'), /Proc-Type: 4,ENCRYPTED/);
    const findings = evaluate(c);
    assert.deepEqual(findings.map((f) => f.rule), ['P-KEY-PEM']);
    assert.match(findings[0]?.message ?? '', /legacy/);
  });

  it("accepts Node's own encrypted PKCS#8 (PBES2, HMAC-SHA-256, AES) and refuses its legacy SEC 1", () => {
    const passphrase = 'node-passphrase';
    const pkcs8 = generateKeyPairSync('ec', {
      namedCurve: 'P-256',
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase },
    });
    assert.equal(loadPrivateKeyPem(new Secret(pkcs8.privateKey), new Secret(passphrase)).ok, true);
    // The legacy SEC 1 encryption derives its key with MD5: made by the system openssl outside FIPS mode.
    const plain = execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout'], { env: fixtureEnv() });
    const sec1 = execFileSync('openssl', ['ec', '-aes256', '-passout', `pass:${passphrase}`], { input: plain, env: fixtureEnv(), encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    const legacy = loadPrivateKeyPem(new Secret(sec1), new Secret(passphrase));
    assert.equal(legacy.ok, false);
    assert.ok(!legacy.ok && /Proc-Type/.test(legacy.problem));
  });

  it('refuses text that is no key at all', () => {
    const c = load(byName('p-256'));
    const findings = checkPolicy({ ...c.input, key: { kind: 'pem', pem: new Secret('not a key') } }, c.policy, new Date());
    assert.deepEqual(findings.map((f) => f.rule), ['P-KEY-PEM']);
  });

  it("kind 'public' compares the SPKI; 'proven' is trusted; an unknown key is refused", () => {
    const c = load(byName('p-256'));
    const leafSpki = new X509Certificate(c.input.certs[0] as Buffer).publicKey.export({ type: 'spki', format: 'der' });
    const run = (key: PolicyInput['key']): RuleId[] => checkPolicy({ ...c.input, key }, c.policy, new Date()).map((f) => f.rule);
    assert.deepEqual(run({ kind: 'public', spki: leafSpki }), []);
    const otherPem = readFileSync(byName('key-mismatch').files.key as string);
    const otherSpki = createPublicKey(otherPem).export({ type: 'spki', format: 'der' });
    assert.deepEqual(run({ kind: 'public', spki: otherSpki }), ['P-KEYMATCH']);
    assert.deepEqual(run({ kind: 'public', spki: Buffer.alloc(0) }), ['P-KEYMATCH']);
    assert.deepEqual(run({ kind: 'public', spki: Buffer.from('3003020100', 'hex') }), ['P-KEYMATCH']);
    assert.deepEqual(run({ kind: 'proven' }), []);
    assert.deepEqual(run(undefined), []);
  });

  it('the corpus passphrase is only test material', () => {
    assert.equal(CORPUS_PASSPHRASE, 'corpus-passphrase');
  });
});

describe('describeCertificate', () => {
  it('summarises a P-256 leaf as Node does where Node can', () => {
    const der = load(byName('p-256')).input.certs[0] as Buffer;
    const node = new X509Certificate(der);
    const s = describeCertificate(der);
    assert.equal(s.fingerprint256, node.fingerprint256);
    assert.equal(s.serial, node.serialNumber.toUpperCase());
    assert.equal(s.notAfter, new Date(node.validTo).toISOString());
    assert.equal(s.subject, 'O=certd corpus, CN=p256.example.test');
    assert.equal(s.issuer, 'O=certd corpus, CN=P-256 Issuing CA');
    assert.deepEqual(s.dnsNames, ['leaf.example.test', '*.apps.example.test']);
    assert.deepEqual(s.ipAddresses, ['127.0.0.1', '::1']);
    assert.equal(s.keyAlgorithm, 'EC');
    assert.equal(s.curve, 'P-256');
    assert.equal(s.keyBits, 256);
    assert.equal(s.signatureAlgorithm, 'ecdsa-with-SHA256');
    assert.equal(s.isCA, false);
    assert.deepEqual(s.keyUsage, ['digitalSignature']);
    assert.deepEqual(s.extKeyUsage, ['serverAuth']);
  });

  it('reports CA flags, pathLen, RSA sizes, PSS and explicit curves', () => {
    const pathlen = byName('pathlen-exceeded');
    const root = describeCertificate(parseBundle(readFileSync(pathlen.files.root as string)).certs[0] as Buffer);
    assert.equal(root.isCA, true);
    assert.equal(root.pathLen, 0);
    assert.deepEqual(root.keyUsage, ['keyCertSign', 'crlSign']);
    const rsa = describeCertificate(load(byName('rsa-3072')).input.certs[0] as Buffer);
    assert.deepEqual([rsa.keyAlgorithm, rsa.keyBits], ['RSA', 3072]);
    const pss = describeCertificate(load(byName('rsa-pss-signature')).input.certs[0] as Buffer);
    assert.equal(pss.signatureAlgorithm, 'RSASSA-PSS with sha256');
    const explicit = describeCertificate(load(byName('ec-explicit')).input.certs[0] as Buffer);
    assert.deepEqual([explicit.curve, explicit.keyBits], ['explicit', 256]);
  });

  it('throws E_PARSE for bytes that are not a certificate', () => {
    assert.throws(() => describeCertificate(Buffer.from('3003020100', 'hex')), (e: unknown) => isCertdError(e, 'E_PARSE'));
  });
});
