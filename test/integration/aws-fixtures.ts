// Seeding the AWS peer with certificate material the way an operator would store it, and the
// environment certd needs to talk to the peer. Leaves come from TestPki (the openssl CLI).
import { readFileSync } from 'node:fs';
import { DEFAULT_TEST_CREDENTIALS, type AwsPeer } from '../peers/aws-peer.js';
import type { Issued, TestPki } from '../helpers/pki.js';

/** The JSON document certd's DESIGN.md describes: certificate, private_key, chain. */
export function secretJson(pki: TestPki, leaf: Issued, key?: string): string {
  return JSON.stringify({ certificate: leaf.certPem, private_key: key ?? readFileSync(leaf.keyPath, 'utf8'), chain: pki.intermediate.certPem });
}

export async function createSecret(peer: AwsPeer, name: string, value: string): Promise<string> {
  const out = (await peer.invoke('secretsmanager.CreateSecret', { Name: name, SecretString: value })) as { VersionId: string };
  return out.VersionId;
}

/** A new version with the given stages (AWSCURRENT when none). */
export async function putSecret(peer: AwsPeer, name: string, value: string, stages?: string[]): Promise<string> {
  const out = (await peer.invoke('secretsmanager.PutSecretValue', { SecretId: name, SecretString: value, ...(stages ? { VersionStages: stages } : {}) })) as { VersionId: string };
  return out.VersionId;
}

export async function moveCurrent(peer: AwsPeer, name: string, to: string, from: string): Promise<void> {
  await peer.invoke('secretsmanager.UpdateSecretVersionStage', { SecretId: name, VersionStage: 'AWSCURRENT', MoveToVersionId: to, RemoveFromVersionId: from });
}

export async function putParameter(peer: AwsPeer, name: string, value: string, secure = false): Promise<void> {
  await peer.invoke('AmazonSSM.PutParameter', { Name: name, Value: value, Type: secure ? 'SecureString' : 'String', Overwrite: true });
}

/** cert, key (SecureString) and chain under `<prefix>/` as the ssm source's path mode reads them. */
export async function putParameterSet(peer: AwsPeer, prefix: string, pki: TestPki, leaf: Issued, key?: string): Promise<void> {
  await putParameter(peer, `${prefix}/cert`, leaf.certPem);
  await putParameter(peer, `${prefix}/key`, key ?? readFileSync(leaf.keyPath, 'utf8'), key === undefined);
  await putParameter(peer, `${prefix}/chain`, pki.intermediate.certPem);
}

export async function createSymmetricKey(peer: AwsPeer): Promise<string> {
  const out = (await peer.invoke('TrentService.CreateKey', {})) as { KeyMetadata: { KeyId: string } };
  return out.KeyMetadata.KeyId;
}

/** Base64 KMS ciphertext of a file's bytes under `context`, as `aws kms encrypt` would print. */
export async function kmsEncrypt(peer: AwsPeer, keyId: string, plaintext: Buffer, context: Record<string, string>): Promise<string> {
  const out = (await peer.invoke('TrentService.Encrypt', { KeyId: keyId, Plaintext: plaintext.toString('base64'), EncryptionContext: context })) as { CiphertextBlob: string };
  return out.CiphertextBlob;
}

/** Static test credentials for a certd child process or for the SDK in this process. */
export function awsEnv(peer: AwsPeer): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: DEFAULT_TEST_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: DEFAULT_TEST_CREDENTIALS.secretAccessKey,
    AWS_REGION: peer.region,
    // Hermetic: no profile files of the machine, no IMDS probe.
    AWS_CONFIG_FILE: '/nonexistent/certd-test-aws-config',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/certd-test-aws-credentials',
    AWS_EC2_METADATA_DISABLED: 'true',
  };
}
