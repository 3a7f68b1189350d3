import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from '../cli.js';
import { EXIT_OK, EXIT_USAGE } from '../cli.js';
import { loadConfig } from '../config.js';
import { CertdError, messageOf } from '../errors.js';
import { buildReport, renderReport, signReport } from '../report.js';
import { loggerFor } from './common.js';

const FORMATS = ['json', 'md', 'html'] as const;
type Format = (typeof FORMATS)[number];

export const reportCommand: Command = {
  summary: 'certd report: compliance evidence for assessors (NIST SP 800-53 SC-12, SC-13, SC-17).',
  usage: 'certd report [--config F] [--format json|md|html] [--out F] [--sign] [--no-endpoints]',
  help: `Options:
  -c, --config F       config file (default: $CERTD_CONFIG, else /etc/certd/config.yaml)
  --format X           json (default), md or html (one self-contained file: inline CSS, no scripts,
                       nothing fetched; prints well)
  --out F              write the report to F instead of stdout
  --sign               also write F.sig: a detached signature of F's exact bytes, DER-encoded, made
                       with report.signing_key (RSA or EC, PEM) and SHA-256. Check it with
                         openssl dgst -sha256 -verify pub.pem -signature F.sig F
                       (pub.pem: openssl pkey -in key.pem -pubout). Needs --out.
  --no-endpoints       do not probe the verify endpoints (protocol and suite scan)

The report holds, for each certificate: source and version, subject, SANs, key, signature
algorithm, validity and days left, the chain to its anchor, every policy finding re-checked on
the deployed certificate (read back from the tmpfs target; keyval/APISIX: the last-good record)
with the NIST / CA/B reference behind its rule, where and how it is deployed, and its recent
audit trail; the host's FIPS state (kernel flag, certd's probe, the system OpenSSL's providers
and its MD5/SHA-256 checks, nginx -V); each verify endpoint's protocols and FIPS / non-FIPS
suites; the audit trail's chain check; and a summary mapping all of it to SC-12, SC-13 and
SC-17 (pass / attention / fail). It never reads a private key. Exit 0 (findings are content,
not errors); 2 usage or configuration error.`,
  options: {
    config: { type: 'string' },
    format: { type: 'string' },
    out: { type: 'string' },
    sign: { type: 'boolean' },
    'no-endpoints': { type: 'boolean' },
    json: { type: 'boolean' },
  },
  async run(v, _p, io) {
    const usage = (msg: string): number => {
      io.err(`certd report: ${msg}\nUsage: ${reportCommand.usage}\n`);
      return EXIT_USAGE;
    };
    const format = (typeof v['format'] === 'string' ? v['format'] : 'json') as Format;
    if (!FORMATS.includes(format)) return usage(`--format must be one of ${FORMATS.join(', ')}`);
    const out = typeof v['out'] === 'string' ? v['out'] : undefined;
    const wantSign = v['sign'] === true;
    if (wantSign && out === undefined) return usage('--sign needs --out F (the signature is written to F.sig)');
    const loaded = loadConfig(typeof v['config'] === 'string' ? v['config'] : undefined, io.env);
    const signingKey = loaded.config.report.signing_key;
    if (wantSign && !signingKey) throw new CertdError('E_CONFIG', `--sign: ${loaded.path} sets no report.signing_key (an RSA or EC private key, PEM)`);
    // Read the key before the (slow) report so a wrong path fails at once.
    let keyPem: Buffer | undefined;
    const keyPath = signingKey ? loaded.resolvePath(signingKey) : '';
    if (wantSign) {
      try {
        keyPem = await readFile(keyPath);
      } catch (err) {
        throw new CertdError('E_CONFIG', `report.signing_key: reading ${keyPath}: ${messageOf(err)}`, { cause: err });
      }
    }
    const report = await buildReport(loaded, { log: loggerFor(loaded, io.env), env: io.env, endpoints: v['no-endpoints'] !== true });
    const text = Buffer.from(renderReport(report, format));
    if (out === undefined) {
      io.out(text.toString('utf8'));
      return EXIT_OK;
    }
    await writeFile(out, text, { mode: 0o644 });
    if (keyPem) {
      const { signature, signer } = signReport(text, keyPem, keyPath);
      await writeFile(`${out}.sig`, signature, { mode: 0o644 });
      io.err(`certd report: wrote ${out} and ${out}.sig (SHA-256, DER; signer SPKI sha256 ${signer})\n`);
    } else {
      io.err(`certd report: wrote ${out}\n`);
    }
    return EXIT_OK;
  },
};
