// KMS (target prefix TrentService) with real keys. Symmetric ciphertexts are AES-256-GCM under a
// per-key secret; the encryption context is bound as additional authenticated data, so a wrong
// context fails authentication and answers InvalidCiphertextException, as AWS does.
// Blob layout (private to this peer, opaque to clients as AWS's is):
//   0x01 | keyIdLength u8 | keyId | iv[12] | tag[16] | ciphertext
import {
  constants, createCipheriv, createDecipheriv, generateKeyPair, privateDecrypt, publicEncrypt, randomBytes, randomUUID,
  type KeyObject,
} from 'node:crypto';
import { promisify } from 'node:util';
import { AwsError, optionalString, requireBlob, requireString, validation } from './aws-error.js';
import type { EmulatedService, Operation, ServiceContext } from './aws-service.js';
import { epochSeconds } from './aws-service.js';
import { SIGNING_ALGORITHMS, digestLength, signDigest, signMessage, type SigningAlgorithm } from './aws-kms-sign.js';

const generateKeyPairAsync = promisify(generateKeyPair);

const KEY_SPECS = ['SYMMETRIC_DEFAULT', 'RSA_2048', 'RSA_3072', 'RSA_4096', 'ECC_NIST_P256', 'ECC_NIST_P384'] as const;
type KeySpec = (typeof KEY_SPECS)[number];
type KeyUsage = 'ENCRYPT_DECRYPT' | 'SIGN_VERIFY';
const MAX_PLAINTEXT = 4096;
const BLOB_VERSION = 0x01;

export interface KmsKey {
  readonly keyId: string;
  readonly arn: string;
  readonly spec: KeySpec;
  readonly usage: KeyUsage;
  readonly createdMs: number;
  readonly description: string;
  readonly secret?: Buffer;
  readonly privateKey?: KeyObject;
  readonly publicKey?: KeyObject;
}

export class KmsService implements EmulatedService {
  readonly targetPrefix = 'TrentService';
  readonly signingName = 'kms';
  readonly errorNamespace = 'com.amazonaws.kms';
  readonly internalError = { code: 'KMSInternalException', message: 'An internal error occurred.' };
  readonly operations: Readonly<Record<string, Operation>>;

  private readonly keys = new Map<string, KmsKey>();
  private readonly aliases = new Map<string, string>();

  constructor(private readonly ctx: ServiceContext) {
    this.operations = {
      CreateKey: (i) => this.createKey(i),
      CreateAlias: (i) => this.createAlias(i),
      DescribeKey: (i) => ({ KeyMetadata: this.metadata(this.resolve(requireString(i, 'KeyId'))) }),
      Encrypt: (i) => this.encrypt(i),
      Decrypt: (i) => this.decrypt(i),
      Sign: (i) => this.sign(i),
      GetPublicKey: (i) => this.getPublicKey(i),
    };
  }

  /** Symmetric encryption for services that keep data under a KMS key (SSM SecureString). */
  encryptWith(keyRef: string, plaintext: Buffer, context: Record<string, string>): Buffer {
    return this.sealSymmetric(this.resolve(keyRef), plaintext, context);
  }

  decryptBlob(blob: Buffer, context: Record<string, string>): { key: KmsKey; plaintext: Buffer } {
    return this.openSymmetric(blob, context);
  }

  /** An AWS managed key such as `alias/aws/ssm`, created on first use as AWS does. */
  managedKey(alias: string): KmsKey {
    const existing = this.aliases.get(alias);
    if (existing !== undefined) return this.keys.get(existing)!;
    const key = this.addKey('SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', `Default key that protects my ${alias.split('/').pop()} data`, {
      secret: randomBytes(32),
    });
    this.aliases.set(alias, key.keyId);
    return key;
  }

  /** Finds a key by id, key ARN, alias name or alias ARN; NotFoundException otherwise. */
  resolve(ref: string): KmsKey {
    const aliasArnPrefix = `arn:aws:kms:${this.ctx.region}:${this.ctx.accountId}:`;
    const bare = ref.startsWith(aliasArnPrefix) ? ref.slice(aliasArnPrefix.length) : ref;
    let id: string | undefined;
    if (bare.startsWith('alias/')) {
      id = this.aliases.get(bare);
      if (id === undefined) throw new AwsError('NotFoundException', `Alias ${aliasArnPrefix}${bare} is not found.`);
    } else {
      id = bare.startsWith('key/') ? bare.slice(4) : bare;
    }
    const key = this.keys.get(id);
    if (key === undefined) throw new AwsError('NotFoundException', `Key '${aliasArnPrefix}key/${id}' does not exist`);
    return key;
  }

  private async createKey(input: Record<string, unknown>): Promise<unknown> {
    const spec = (optionalString(input, 'KeySpec') ?? optionalString(input, 'CustomerMasterKeySpec') ?? 'SYMMETRIC_DEFAULT') as KeySpec;
    if (!KEY_SPECS.includes(spec)) throw validation(`KeySpec ${spec} is not supported by this endpoint`);
    const usage = (optionalString(input, 'KeyUsage') ?? 'ENCRYPT_DECRYPT') as KeyUsage;
    const allowed: Record<KeySpec, KeyUsage[]> = {
      SYMMETRIC_DEFAULT: ['ENCRYPT_DECRYPT'],
      RSA_2048: ['ENCRYPT_DECRYPT', 'SIGN_VERIFY'],
      RSA_3072: ['ENCRYPT_DECRYPT', 'SIGN_VERIFY'],
      RSA_4096: ['ENCRYPT_DECRYPT', 'SIGN_VERIFY'],
      ECC_NIST_P256: ['SIGN_VERIFY'],
      ECC_NIST_P384: ['SIGN_VERIFY'],
    };
    if (!allowed[spec].includes(usage)) throw validation(`KeyUsage ${usage} is not compatible with KeySpec ${spec}`);
    const description = optionalString(input, 'Description') ?? '';
    let material: Pick<KmsKey, 'secret' | 'privateKey' | 'publicKey'>;
    if (spec === 'SYMMETRIC_DEFAULT') {
      material = { secret: randomBytes(32) };
    } else if (spec.startsWith('RSA_')) {
      material = await generateKeyPairAsync('rsa', { modulusLength: Number(spec.slice(4)) });
    } else {
      material = await generateKeyPairAsync('ec', { namedCurve: spec === 'ECC_NIST_P256' ? 'P-256' : 'P-384' });
    }
    return { KeyMetadata: this.metadata(this.addKey(spec, usage, description, material)) };
  }

  private addKey(spec: KeySpec, usage: KeyUsage, description: string, material: Pick<KmsKey, 'secret' | 'privateKey' | 'publicKey'>): KmsKey {
    const keyId = randomUUID();
    const key: KmsKey = {
      keyId,
      arn: `arn:aws:kms:${this.ctx.region}:${this.ctx.accountId}:key/${keyId}`,
      spec,
      usage,
      createdMs: this.ctx.nowMs(),
      description,
      ...material,
    };
    this.keys.set(keyId, key);
    return key;
  }

  private createAlias(input: Record<string, unknown>): unknown {
    const alias = requireString(input, 'AliasName');
    if (!/^alias\/[A-Za-z0-9/_-]{1,250}$/.test(alias) || alias.startsWith('alias/aws/')) {
      throw validation(`Alias ${alias} must begin with alias/ and may not begin with alias/aws/`);
    }
    if (this.aliases.has(alias)) throw new AwsError('AlreadyExistsException', `An alias with the name ${this.aliasArn(alias)} already exists`);
    this.aliases.set(alias, this.resolve(requireString(input, 'TargetKeyId')).keyId);
    return {};
  }

  private encrypt(input: Record<string, unknown>): unknown {
    const key = this.resolve(requireString(input, 'KeyId'));
    const plaintext = requireBlob(input, 'Plaintext');
    if (plaintext.length > MAX_PLAINTEXT) throw validation(`Plaintext must be at most ${MAX_PLAINTEXT} bytes`);
    this.requireUsage(key, 'ENCRYPT_DECRYPT');
    const algorithm = optionalString(input, 'EncryptionAlgorithm') ?? 'SYMMETRIC_DEFAULT';
    if (key.spec === 'SYMMETRIC_DEFAULT') {
      if (algorithm !== 'SYMMETRIC_DEFAULT') throw invalidKeyUsage(key, `EncryptionAlgorithm ${algorithm}`);
      const blob = this.sealSymmetric(key, plaintext, readContext(input));
      return { CiphertextBlob: blob.toString('base64'), KeyId: key.arn, EncryptionAlgorithm: algorithm };
    }
    const oaepHash = oaepHashOf(key, algorithm);
    const blob = publicEncrypt({ key: key.publicKey!, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, plaintext);
    return { CiphertextBlob: blob.toString('base64'), KeyId: key.arn, EncryptionAlgorithm: algorithm };
  }

  private decrypt(input: Record<string, unknown>): unknown {
    const blob = requireBlob(input, 'CiphertextBlob');
    const keyRef = optionalString(input, 'KeyId');
    const algorithm = optionalString(input, 'EncryptionAlgorithm') ?? 'SYMMETRIC_DEFAULT';
    if (algorithm !== 'SYMMETRIC_DEFAULT') {
      // Asymmetric ciphertext carries no key id: AWS requires the caller to name the key.
      if (keyRef === undefined) throw validation('KeyId is required for asymmetric decryption');
      const key = this.resolve(keyRef);
      this.requireUsage(key, 'ENCRYPT_DECRYPT');
      const oaepHash = oaepHashOf(key, algorithm);
      let plaintext: Buffer;
      try {
        plaintext = privateDecrypt({ key: key.privateKey!, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, blob);
      } catch {
        throw new AwsError('InvalidCiphertextException', '');
      }
      return { Plaintext: plaintext.toString('base64'), KeyId: key.arn, EncryptionAlgorithm: algorithm };
    }
    const { key, plaintext } = this.openSymmetric(blob, readContext(input));
    if (keyRef !== undefined && this.resolve(keyRef) !== key) {
      throw new AwsError('IncorrectKeyException', 'The key ID in the request does not identify a CMK that can perform this operation.');
    }
    return { Plaintext: plaintext.toString('base64'), KeyId: key.arn, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
  }

  private sign(input: Record<string, unknown>): unknown {
    const key = this.resolve(requireString(input, 'KeyId'));
    const message = requireBlob(input, 'Message');
    const messageType = optionalString(input, 'MessageType') ?? 'RAW';
    const algorithm = requireString(input, 'SigningAlgorithm') as SigningAlgorithm;
    this.requireUsage(key, 'SIGN_VERIFY');
    if (!signingAlgorithmsOf(key.spec).includes(algorithm)) throw invalidKeyUsage(key, `SigningAlgorithm ${algorithm}`);
    let signature: Buffer;
    if (messageType === 'RAW') {
      if (message.length > 4096) throw validation('Message must be at most 4096 bytes; use MessageType DIGEST');
      signature = signMessage(key.privateKey!, algorithm, message);
    } else if (messageType === 'DIGEST') {
      if (message.length !== digestLength(algorithm)) throw validation(`Digest is invalid length for algorithm ${algorithm}.`);
      signature = signDigest(key.privateKey!, algorithm, message);
    } else {
      throw validation(`MessageType ${messageType} is not RAW or DIGEST`);
    }
    return { KeyId: key.arn, Signature: signature.toString('base64'), SigningAlgorithm: algorithm };
  }

  private getPublicKey(input: Record<string, unknown>): unknown {
    const key = this.resolve(requireString(input, 'KeyId'));
    if (key.publicKey === undefined) {
      throw new AwsError('UnsupportedOperationException', `${key.arn} key usage is ENCRYPT_DECRYPT which is not valid for GetPublicKey.`);
    }
    return {
      KeyId: key.arn,
      PublicKey: key.publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
      CustomerMasterKeySpec: key.spec,
      KeySpec: key.spec,
      KeyUsage: key.usage,
      ...(key.usage === 'SIGN_VERIFY'
        ? { SigningAlgorithms: signingAlgorithmsOf(key.spec) }
        : { EncryptionAlgorithms: ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256'] }),
    };
  }

  private metadata(key: KmsKey): unknown {
    return {
      AWSAccountId: this.ctx.accountId,
      KeyId: key.keyId,
      Arn: key.arn,
      CreationDate: epochSeconds(key.createdMs),
      Enabled: true,
      Description: key.description,
      KeyUsage: key.usage,
      KeyState: 'Enabled',
      Origin: 'AWS_KMS',
      KeyManager: 'CUSTOMER',
      CustomerMasterKeySpec: key.spec,
      KeySpec: key.spec,
      MultiRegion: false,
      ...(key.usage === 'SIGN_VERIFY'
        ? { SigningAlgorithms: signingAlgorithmsOf(key.spec) }
        : { EncryptionAlgorithms: key.spec === 'SYMMETRIC_DEFAULT' ? ['SYMMETRIC_DEFAULT'] : ['RSAES_OAEP_SHA_1', 'RSAES_OAEP_SHA_256'] }),
    };
  }

  private sealSymmetric(key: KmsKey, plaintext: Buffer, context: Record<string, string>): Buffer {
    if (key.secret === undefined) throw invalidKeyUsage(key, 'symmetric encryption');
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key.secret, iv);
    cipher.setAAD(additionalData(key.keyId, context));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const id = Buffer.from(key.keyId, 'ascii');
    return Buffer.concat([Buffer.from([BLOB_VERSION, id.length]), id, iv, cipher.getAuthTag(), body]);
  }

  private openSymmetric(blob: Buffer, context: Record<string, string>): { key: KmsKey; plaintext: Buffer } {
    const invalid = new AwsError('InvalidCiphertextException', '');
    if (blob.length < 2 || blob[0] !== BLOB_VERSION) throw invalid;
    const idLen = blob[1]!;
    if (blob.length < 2 + idLen + 28) throw invalid;
    const keyId = blob.subarray(2, 2 + idLen).toString('ascii');
    const key = this.keys.get(keyId);
    if (key?.secret === undefined) throw invalid;
    const iv = blob.subarray(2 + idLen, 14 + idLen);
    const tag = blob.subarray(14 + idLen, 30 + idLen);
    const decipher = createDecipheriv('aes-256-gcm', key.secret, iv);
    decipher.setAAD(additionalData(keyId, context));
    decipher.setAuthTag(tag);
    try {
      return { key, plaintext: Buffer.concat([decipher.update(blob.subarray(30 + idLen)), decipher.final()]) };
    } catch {
      throw invalid;
    }
  }

  private requireUsage(key: KmsKey, usage: KeyUsage): void {
    if (key.usage !== usage) throw invalidKeyUsage(key, usage);
  }

  private aliasArn(alias: string): string {
    return `arn:aws:kms:${this.ctx.region}:${this.ctx.accountId}:${alias}`;
  }
}

function invalidKeyUsage(key: KmsKey, what: string): AwsError {
  return new AwsError('InvalidKeyUsageException', `${key.arn} (${key.spec}, ${key.usage}) does not support ${what}.`);
}

function signingAlgorithmsOf(spec: KeySpec): SigningAlgorithm[] {
  if (spec === 'ECC_NIST_P256') return ['ECDSA_SHA_256'];
  if (spec === 'ECC_NIST_P384') return ['ECDSA_SHA_384'];
  if (spec.startsWith('RSA_')) return SIGNING_ALGORITHMS.filter((a) => a.startsWith('RSASSA'));
  return [];
}

function oaepHashOf(key: KmsKey, algorithm: string): string {
  if (algorithm === 'RSAES_OAEP_SHA_1') return 'sha1';
  if (algorithm === 'RSAES_OAEP_SHA_256') return 'sha256';
  throw invalidKeyUsage(key, `EncryptionAlgorithm ${algorithm}`);
}

function readContext(input: Record<string, unknown>): Record<string, string> {
  const raw = input['EncryptionContext'];
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw validation('EncryptionContext must be a map');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') throw validation('EncryptionContext values must be strings');
    out[k] = v;
  }
  return out;
}

/** The key id and the context, keys sorted, so equal contexts in any order authenticate alike. */
function additionalData(keyId: string, context: Record<string, string>): Buffer {
  const sorted = Object.keys(context).sort().map((k) => [k, context[k]]);
  return Buffer.from(JSON.stringify([keyId, sorted]), 'utf8');
}

