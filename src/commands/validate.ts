import { X509Certificate } from 'node:crypto';
import type { Command } from '../cli.js';
import { EXIT_FAIL, EXIT_OK, EXIT_USAGE } from '../cli.js';
import { CertdError, messageOf } from '../errors.js';
import { readInput } from '../input.js';
import { checkPolicy } from '../policy/check.js';
import { parseBundle, parseKeyInput } from '../policy/pem.js';
import { DEFAULT_POLICY, type Finding, type PolicyKey, type PolicySettings } from '../policy/types.js';
import { parseDuration } from '../duration.js';
import { createHash } from 'node:crypto';
import { Secret } from '../secret.js';

export interface ValidateResult {
  ok: boolean;
  findings: Finding[];
  fingerprint: string;
  notAfter: string;
}

export const validateCommand: Command = {
  summary: 'certd validate: check certificate and key files against the FIPS policy. Deploys nothing.',
  usage: 'certd validate --cert F [--key F] [--chain F] [--trust F] [--hostname H ...] [--json]',
  help: `Options:
  --cert F             leaf certificate (PEM or DER); may also hold the chain and the key
  --key F              private key (PEM or DER); enables P-KEYMATCH and P-KEY-PEM
  --chain F            intermediates, leaf's issuer first
  --trust F            trust anchors: the chain must end at one of them (P-CHAIN-ANCHOR)
  --hostname H         a name the leaf must cover (repeatable)
  --min-rsa-bits N     default 2048
  --min-remaining D    default 7d
  --renew-before D     default 30d (P-EXPIRING warning)
  --allow-self-signed  development only
  --allow-ed25519      accept Ed25519/Ed448 keys
  --public-trust       treat the chain as publicly trusted (CA/B lifetime limits, P-LIFE-PUBLIC);
                       default: only when it ends at a root of Node's bundled Mozilla store
  --key-passphrase-env VAR   the environment variable holding the passphrase of an encrypted
                       PKCS#8 key (never give a passphrase on the command line)
  --json               {"ok", "findings": [{"rule","severity","message","cert"}], "fingerprint", "notAfter"}

Rule ids are those of certd's policy, docs/POLICY.md (P-RSA-MIN, P-SIG-HASH, ...). Exit 0 when nothing is rejected
(warnings allowed), 1 when something is, 2 on a usage error.`,
  options: {
    cert: { type: 'string' },
    key: { type: 'string' },
    chain: { type: 'string' },
    trust: { type: 'string' },
    hostname: { type: 'string', multiple: true },
    'min-rsa-bits': { type: 'string' },
    'min-remaining': { type: 'string' },
    'renew-before': { type: 'string' },
    'allow-self-signed': { type: 'boolean' },
    'allow-ed25519': { type: 'boolean' },
    'public-trust': { type: 'boolean' },
    'key-passphrase-env': { type: 'string' },
    json: { type: 'boolean' },
  },
  async run(v, _p, io) {
    if (typeof v['cert'] !== 'string') {
      io.err('certd validate: --cert is required\n');
      return EXIT_USAGE;
    }
    const policy: PolicySettings = {
      ...DEFAULT_POLICY,
      minRsaBits: v['min-rsa-bits'] ? Number(v['min-rsa-bits']) : DEFAULT_POLICY.minRsaBits,
      minRemainingMs: v['min-remaining'] ? parseDuration(String(v['min-remaining'])) : DEFAULT_POLICY.minRemainingMs,
      renewBeforeMs: v['renew-before'] ? parseDuration(String(v['renew-before'])) : DEFAULT_POLICY.renewBeforeMs,
      allowSelfSigned: v['allow-self-signed'] === true,
      allowEd25519: v['allow-ed25519'] === true,
      ...(v['public-trust'] === true ? { publicTrust: true } : {}),
    };
    let passphrase: Secret | undefined;
    if (typeof v['key-passphrase-env'] === 'string') {
      const value = io.env[v['key-passphrase-env']];
      if (value === undefined) {
        io.err(`certd validate: --key-passphrase-env: $${v['key-passphrase-env']} is not set\n`);
        return EXIT_USAGE;
      }
      passphrase = new Secret(value);
    }
    if (!Number.isInteger(policy.minRsaBits) || policy.minRsaBits < 2048) {
      io.err('certd validate: --min-rsa-bits must be a whole number >= 2048\n');
      return EXIT_USAGE;
    }
    const result = await validateFiles(
      { cert: v['cert'], key: v['key'] as string | undefined, chain: v['chain'] as string | undefined, trust: v['trust'] as string | undefined, hostnames: (v['hostname'] as string[] | undefined) ?? [], passphrase },
      policy,
      new Date(),
    );
    if (v['json'] === true) {
      io.out(`${JSON.stringify(result)}\n`);
    } else {
      for (const f of result.findings) io.out(`${f.severity === 'reject' ? 'REJECT' : 'warn  '} ${f.rule.padEnd(16)} cert ${f.cert}: ${f.message}\n`);
      io.out(result.ok ? `ok: ${v['cert']} passes the policy${result.findings.length ? ' (with warnings)' : ''}\n` : `rejected: ${v['cert']}\n`);
      if (result.fingerprint) io.out(`fingerprint ${result.fingerprint}, not after ${result.notAfter}\n`);
    }
    return result.ok ? EXIT_OK : EXIT_FAIL;
  },
};

function parseFailure(err: unknown): Finding {
  return { rule: 'P-PARSE', severity: 'reject', message: messageOf(err), cert: 0 };
}

/** The policy check on local files, as `certd validate` runs it. Never throws for bad input. */
export async function validateFiles(
  files: { cert: string; key?: string | undefined; chain?: string | undefined; trust?: string | undefined; hostnames: string[]; passphrase?: Secret | undefined },
  policy: PolicySettings,
  now: Date,
): Promise<ValidateResult> {
  let certs: Buffer[];
  let key: PolicyKey | undefined;
  try {
    const certBundle = parseBundle(await readInput(files.cert, 'reading --cert'));
    certs = [...certBundle.certs];
    if (files.chain) certs.push(...parseBundle(await readInput(files.chain, 'reading --chain')).certs);
    if (files.key) {
      const keyPem = parseKeyInput(await readInput(files.key, 'reading --key'), `reading --key: ${files.key}`);
      key = { kind: 'pem', pem: keyPem, passphrase: files.passphrase };
    } else if (certBundle.keyPem) {
      key = { kind: 'pem', pem: certBundle.keyPem };
    }
    if (certs.length === 0) {
      throw new CertdError('E_PARSE', `reading --cert: ${files.cert} holds ${certBundle.keyPem ? 'a private key, not a certificate: are the certificate and key swapped?' : 'no certificate'}`);
    }
  } catch (err) {
    if (err instanceof CertdError && err.code === 'E_SOURCE') throw new CertdError('E_CONFIG', err.message, { cause: err });
    return { ok: false, findings: [parseFailure(err)], fingerprint: '', notAfter: '' };
  }
  let anchors: Buffer[] = [];
  if (files.trust) {
    try {
      anchors = parseBundle(await readInput(files.trust, 'reading --trust')).certs;
    } catch (err) {
      throw new CertdError('E_CONFIG', `reading --trust ${files.trust}: ${messageOf(err)}`, { cause: err });
    }
  }
  const findings = checkPolicy({ certs, key, hostnames: files.hostnames }, { ...policy, trustAnchors: anchors }, now);
  let fingerprint = '';
  let notAfter = '';
  try {
    const leaf = new X509Certificate(certs[0]!);
    fingerprint = createHash('sha256').update(certs[0]!).digest('hex').toUpperCase().replace(/(..)(?!$)/g, '$1:');
    notAfter = new Date(leaf.validTo).toISOString();
  } catch {
    // P-PARSE is already among the findings.
  }
  return { ok: !findings.some((f) => f.severity === 'reject'), findings, fingerprint, notAfter };
}
