/**
 * Source `aws-private-ca`: an issuer whose CA is AWS Private CA. certd makes the leaf key in
 * memory (EC P-256/P-384, RSA 2048/3072/4096), sends a CSR signed by it to IssueCertificate
 * (CA ARN, template, signing algorithm, validity = `ttl`) and reads the certificate with
 * GetCertificate, waiting out RequestInProgressException (issuing is asynchronous on AWS) with
 * a growing pause, for at most ISSUE_WAIT_MS and never past the cycle's abort signal. Renewal is
 * at renew_before or 2/3 of the lifetime, as for the other issuers.
 *
 * The key never leaves the process but through a target. If GetCertificate has not answered by
 * the end of the wait, the certificate ARN and its key are kept in memory (not on disk) and the
 * next attempt reads that certificate instead of issuing another (AWS bills every issued
 * certificate). An IdempotencyToken per issue makes a retried IssueCertificate (a lost answer)
 * issue one certificate, not two.
 *
 * Templates: AWS's default EndEntityCertificate/V1 puts keyEncipherment into every leaf, which
 * the policy refuses on an EC key (P-KU). So without `template_arn` an RSA leaf uses
 * EndEntityCertificate/V1 and an EC leaf BlankEndEntityCertificate_APICSRPassthrough/V1, with
 * which keyUsage, extendedKeyUsage and SANs come from certd's CSR.
 *
 * IAM: acm-pca:IssueCertificate and acm-pca:GetCertificate on the CA. The wire client is
 * src/aws-json-client.ts (SigV4, default credentials, endpoints incl. FIPS, adaptive retries).
 *
 * Quota: the aws-private-ca sources of one client share a lane of PCA_LANE_LIMIT source steps
 * at once (see Source.lane), as many as the client sends requests at once, so a fleet renewing
 * together queues at its turn (fetch_deadline starts then), not inside the client.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { type AwsLocation, awsClient, awsLocation, awsSend, clientKey } from '../src/aws.js';
import type { Issuer, SourceFactory } from '../src/contracts.js';
import { buildCsr, csrPem } from '../src/csr.js';
import { parseDuration } from '../src/duration.js';
import { CertdError, messageOf } from '../src/errors.js';
import { generateLeafKey, renewalDue } from '../src/issuer.js';
import { Material } from '../src/material.js';
import { parseBundle } from '../src/policy/pem.js';
import { awsFields, issuerFields } from '../src/schema.js';
import { Secret } from '../src/secret.js';

const CA_ARN = /^arn:(aws[a-z-]*):acm-pca:([a-z]{2}(?:-[a-z]+)+-\d+):\d{12}:certificate-authority\/[0-9a-f-]{36}$/;
const TEMPLATE_ARN = /^arn:aws[a-z-]*:acm-pca:::template\/[A-Za-z0-9_]+\/V\d+$/;

/** IssueCertificate's signing algorithms (all SHA-2: AWS offers nothing weaker). */
export const PCA_SIGNING_ALGORITHMS = ['SHA256WITHECDSA', 'SHA384WITHECDSA', 'SHA512WITHECDSA', 'SHA256WITHRSA', 'SHA384WITHRSA', 'SHA512WITHRSA'] as const;

/** The message for a signing algorithm certd does not send, naming the rule a weak one breaks. */
export function refusedSigningAlgorithm(value: unknown): string {
  const choices = `expected one of ${PCA_SIGNING_ALGORITHMS.join(', ')}`;
  const text = typeof value === 'string' ? value.toUpperCase() : '';
  if (/^(SHA1|SHA-1|MD5|MD2|MD4)/.test(text)) return `${choices}: ${value as string} breaks P-SIG-HASH (SP 800-131A r2 disallows SHA-1 and MD5 signatures)`;
  if (/^SHA224/.test(text)) return `${choices}: ${value as string} is below what certd issues with (P-SIG-HASH warns on SHA-224)`;
  if (/DSA/.test(text) && !/ECDSA/.test(text)) return `${choices}: ${value as string} breaks P-DSA`;
  return choices;
}

const schema = z
  .strictObject({
    type: z.literal('aws-private-ca'),
    ca_arn: z.string().regex(CA_ARN, 'expected an AWS Private CA ARN such as arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/<id>'),
    template_arn: z.string().regex(TEMPLATE_ARN, 'expected a template ARN such as arn:aws:acm-pca:::template/EndEntityCertificate/V1').optional(),
    signing_algorithm: z.enum(PCA_SIGNING_ALGORITHMS, { error: (iss) => (iss.input === undefined ? 'required: the algorithm of the CA\'s key (SHA256WITHECDSA for an EC CA, SHA256WITHRSA for an RSA CA)' : refusedSigningAlgorithm(iss.input)) }),
    ...awsFields,
    ...issuerFields,
  })
  .refine((c) => c.region === undefined || CA_ARN.exec(c.ca_arn)?.[2] === c.region, {
    path: ['region'],
    message: 'the CA is in the region of its ca_arn: leave region out, or give that one',
  });

/** aws-private-ca source steps of one client in flight at once (the client's MAX_IN_FLIGHT). */
export const PCA_LANE_LIMIT = 4;

/** How long one fetch waits for GetCertificate to stop answering RequestInProgressException. */
export const ISSUE_WAIT_MS = 60_000;
/** First pause between GetCertificate calls; doubles up to POLL_MAX_MS (AWS's own waiter polls every 3 s). */
export const POLL_FIRST_MS = 250;
export const POLL_MAX_MS = 3_000;
/** An unanswered issue is read again (instead of issuing anew) for this long. */
const PENDING_KEEP_MS = 10 * 60_000;

const ISSUE_ACTIONS = ['acm-pca:IssueCertificate'];
const GET_ACTIONS = ['acm-pca:GetCertificate'];

/** The template ARN for a leaf key type when none is configured (see the file comment). */
export function defaultTemplate(partition: string, keyType: string): string {
  const name = keyType.startsWith('rsa-') ? 'EndEntityCertificate/V1' : 'BlankEndEntityCertificate_APICSRPassthrough/V1';
  return `arn:${partition}:acm-pca:::template/${name}`;
}

/** IssueCertificate's Validity for a lifetime: whole days as DAYS, anything else as an ABSOLUTE end. */
export function validityOf(ttlMs: number, now: Date): { Type: 'DAYS' | 'ABSOLUTE'; Value: number } {
  if (ttlMs % 86_400_000 === 0) return { Type: 'DAYS', Value: ttlMs / 86_400_000 };
  return { Type: 'ABSOLUTE', Value: Math.ceil((now.getTime() + ttlMs) / 1000) };
}

interface Pending {
  readonly certificateArn: string;
  readonly key: Secret;
  readonly spki: Buffer;
  readonly issuedAt: number;
  readonly configKey: string;
}

export const awsPrivateCaSource = {
  type: 'aws-private-ca',
  schema,
  create(config, deps, cert): Issuer {
    const ttlMs = parseDuration(config.ttl);
    const [, partition = 'aws', arnRegion] = CA_ARN.exec(config.ca_arn) ?? [];
    // The CA's region is in its ARN; a request to another region would not find it.
    const loc: AwsLocation = { ...awsLocation(config), region: config.region ?? arnRegion };
    const caArn = config.ca_arn;
    const templateArn = config.template_arn ?? defaultTemplate(partition, config.key);
    const origin = `aws-private-ca:${caArn}`;
    const doing = `issuing ${cert.name} with ${origin}`;
    const base = { doing, source: 'aws-private-ca', resource: caArn, notFoundHint: `check ca_arn and the region${loc.region ? ` (${loc.region})` : ''}` };
    const configKey = JSON.stringify([caArn, templateArn, config.signing_algorithm, config.key, config.dns_names, config.subject ?? null, ttlMs]);
    let pending: Pending | undefined;

    async function issue(signal: AbortSignal): Promise<Pending> {
      const key = generateLeafKey(config.key);
      const csr = csrPem(buildCsr({ key: key.privateKey, spki: key.spki, dnsNames: config.dns_names, subject: config.subject }));
      const client = await awsClient(deps, 'acm-pca', loc);
      const out = await awsSend<{ CertificateArn?: string }>(
        deps,
        client,
        {
          operation: 'IssueCertificate',
          input: {
            CertificateAuthorityArn: caArn,
            Csr: Buffer.from(csr, 'utf8').toString('base64'),
            SigningAlgorithm: config.signing_algorithm,
            TemplateArn: templateArn,
            Validity: validityOf(ttlMs, deps.clock.now()),
            IdempotencyToken: randomBytes(16).toString('hex'),
          },
        },
        signal,
        { ...base, operation: 'IssueCertificate', actions: ISSUE_ACTIONS },
      );
      if (typeof out.CertificateArn !== 'string' || out.CertificateArn === '') throw new CertdError('E_SOURCE', `${doing}: IssueCertificate answered no CertificateArn`);
      return { certificateArn: out.CertificateArn, key: new Secret(key.pkcs8Pem), spki: key.spki, issuedAt: deps.clock.now().getTime(), configKey };
    }

    /** GetCertificate until it stops answering RequestInProgressException, within ISSUE_WAIT_MS. */
    async function read(p: Pending, signal: AbortSignal): Promise<{ Certificate?: string; CertificateChain?: string }> {
      const client = await awsClient(deps, 'acm-pca', loc);
      const started = deps.clock.now().getTime();
      let pause = POLL_FIRST_MS;
      for (let calls = 1; ; calls++) {
        try {
          return await awsSend<{ Certificate?: string; CertificateChain?: string }>(
            deps,
            client,
            { operation: 'GetCertificate', input: { CertificateAuthorityArn: caArn, CertificateArn: p.certificateArn } },
            signal,
            { ...base, operation: 'GetCertificate', actions: GET_ACTIONS, resource: p.certificateArn },
          );
        } catch (err) {
          if (!(err instanceof CertdError) || err.details['aws'] !== 'RequestInProgressException') throw err;
          const waited = deps.clock.now().getTime() - started;
          if (waited + pause > ISSUE_WAIT_MS) {
            throw new CertdError('E_SOURCE', `${doing}: ${p.certificateArn} was still being issued after ${Math.round(waited / 1000)}s and ${calls} GetCertificate calls (RequestInProgressException); the next attempt reads it again`, { cause: err });
          }
          try {
            await deps.clock.sleep(pause, signal);
          } catch {
            throw new CertdError('E_SOURCE', `${doing}: stopped while waiting for ${p.certificateArn} to be issued (${messageOf(signal.reason ?? 'aborted')})`, { cause: err });
          }
          pause = Math.min(POLL_MAX_MS, pause * 2);
        }
      }
    }

    return {
      lane: { key: clientKey('acm-pca', loc), limit: PCA_LANE_LIMIT },
      dueAt: (deployed) => renewalDue(deployed, cert.renewBeforeMs),
      async fetch(_ref, signal) {
        const now = deps.clock.now().getTime();
        // An issue whose certificate was not ready last time is read, not issued again.
        if (pending !== undefined && (pending.configKey !== configKey || now - pending.issuedAt > PENDING_KEEP_MS)) pending = undefined;
        const p = pending ?? (await issue(signal));
        pending = p;
        let out: { Certificate?: string; CertificateChain?: string };
        try {
          out = await read(p, signal);
          pending = undefined;
        } catch (err) {
          // A failed or unknown issue is not read again; any other failure (still in progress,
          // throttled, denied, stopped) is, so that a retry costs no second certificate.
          const aws = err instanceof CertdError ? err.details['aws'] : undefined;
          if (aws === 'RequestFailedException' || aws === 'ResourceNotFoundException') pending = undefined;
          throw err;
        }
        if (typeof out.Certificate !== 'string' || out.Certificate === '') throw new CertdError('E_SOURCE', `${doing}: GetCertificate answered no Certificate for ${p.certificateArn}`);
        let certs: Buffer[];
        try {
          certs = parseBundle(Buffer.from(`${out.Certificate.trim()}\n${(out.CertificateChain ?? '').trim()}\n`, 'utf8')).certs;
        } catch (err) {
          throw new CertdError('E_PARSE', `${doing}: GetCertificate's Certificate or CertificateChain is not PEM certificates: ${messageOf(err)}`, { cause: err, permanent: true });
        }
        const leaf = new X509Certificate(certs[0]!);
        // AWS signs the CSR's key; anything else would be a CA misbehaving, and is refused here by name.
        if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(p.spki)) {
          throw new CertdError('E_SOURCE', `${doing}: the certificate ${p.certificateArn} does not hold the public key of certd's request`, { permanent: true });
        }
        return new Material({ certs, key: { kind: 'pem', pem: p.key }, version: `serial:${leaf.serialNumber.toLowerCase()}`, origin });
      },
    };
  },
} satisfies SourceFactory<typeof schema>;
