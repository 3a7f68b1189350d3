// Secrets Manager as certd sees it: secrets with versions and staging labels, kept in memory.
// Label rules follow AWS: a label sits on at most one version; giving AWSCURRENT to a version
// gives AWSPREVIOUS to the version that held it; AWSPENDING is only a label.
import { randomBytes, randomUUID } from 'node:crypto';
import {
  AwsError, optionalBlob, optionalBoolean, optionalString, optionalStringList, requireString, validation,
} from './aws-error.js';
import type { EmulatedService, Operation, ServiceContext } from './aws-service.js';
import { decodePageToken, encodePageToken, epochSeconds } from './aws-service.js';

const CURRENT = 'AWSCURRENT';
const PREVIOUS = 'AWSPREVIOUS';
const MAX_SECRET_BYTES = 65_536;
const BATCH_MAX_IDS = 20;

interface SecretVersion {
  readonly versionId: string;
  readonly string?: string;
  readonly binary?: Buffer;
  readonly stages: Set<string>;
  readonly createdMs: number;
  lastAccessedMs?: number;
}

interface Secret {
  readonly name: string;
  readonly arn: string;
  readonly createdMs: number;
  lastChangedMs: number;
  description?: string;
  kmsKeyId?: string;
  /** Insertion order is creation order, which ListSecretVersionIds reports. */
  readonly versions: Map<string, SecretVersion>;
}

export class SecretsManagerService implements EmulatedService {
  readonly targetPrefix = 'secretsmanager';
  readonly signingName = 'secretsmanager';
  readonly errorNamespace = 'com.amazonaws.secretsmanager';
  readonly internalError = { code: 'InternalServiceError', message: 'An error occurred on the server side.' };
  readonly operations: Readonly<Record<string, Operation>>;

  private readonly secrets = new Map<string, Secret>();
  /** Names whose resource policy denies every caller. */
  private readonly denied = new Set<string>();

  constructor(private readonly ctx: ServiceContext) {
    this.operations = {
      CreateSecret: (i) => this.createSecret(i),
      PutSecretValue: (i) => this.putSecretValue(i),
      UpdateSecretVersionStage: (i) => this.updateSecretVersionStage(i),
      GetSecretValue: (i) => this.getSecretValue(i),
      BatchGetSecretValue: (i) => this.batchGetSecretValue(i),
      DescribeSecret: (i) => this.describeSecret(i),
      ListSecretVersionIds: (i) => this.listSecretVersionIds(i),
    };
  }

  deny(name: string): void {
    this.denied.add(name);
  }

  allow(name: string): void {
    this.denied.delete(name);
  }

  private createSecret(input: Record<string, unknown>): unknown {
    const name = requireString(input, 'Name');
    if (!/^[A-Za-z0-9/_+=.@-]{1,512}$/.test(name)) {
      throw new AwsError('InvalidParameterException', 'Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!');
    }
    if (this.secrets.has(name)) {
      throw new AwsError('ResourceExistsException', `The operation failed because the secret ${name} already exists.`);
    }
    const value = readValue(input, false);
    const now = this.ctx.nowMs();
    const suffix = randomBytes(6).toString('base64').replace(/[^A-Za-z0-9]/g, 'x').slice(0, 6);
    const secret: Secret = {
      name,
      arn: `arn:aws:secretsmanager:${this.ctx.region}:${this.ctx.accountId}:secret:${name}-${suffix}`,
      createdMs: now,
      lastChangedMs: now,
      versions: new Map(),
    };
    const description = optionalString(input, 'Description');
    if (description !== undefined) secret.description = description;
    // The key is recorded and reported, not used: values are kept in memory in clear.
    const kmsKeyId = optionalString(input, 'KmsKeyId');
    if (kmsKeyId !== undefined) secret.kmsKeyId = kmsKeyId;
    this.secrets.set(name, secret);
    if (value === undefined) return { ARN: secret.arn, Name: name };
    const version = this.addVersion(secret, versionIdFrom(input), value, [CURRENT]);
    return { ARN: secret.arn, Name: name, VersionId: version.versionId };
  }

  private putSecretValue(input: Record<string, unknown>): unknown {
    const secret = this.find(requireString(input, 'SecretId'), 'PutSecretValue');
    const value = readValue(input, true);
    if (value === undefined) throw new Error('unreachable: value required');
    const stages = optionalStringList(input, 'VersionStages') ?? [CURRENT];
    const versionId = versionIdFrom(input);
    const existing = secret.versions.get(versionId);
    if (existing !== undefined) {
      // A retried request with the same token and value is a no-op, as in AWS.
      if (!sameValue(existing, value)) {
        throw new AwsError('ResourceExistsException', 'You can\'t modify an existing version, you can only create a new version.');
      }
      return { ARN: secret.arn, Name: secret.name, VersionId: existing.versionId, VersionStages: [...existing.stages] };
    }
    const version = this.addVersion(secret, versionId, value, stages);
    return { ARN: secret.arn, Name: secret.name, VersionId: version.versionId, VersionStages: [...version.stages] };
  }

  private updateSecretVersionStage(input: Record<string, unknown>): unknown {
    const secret = this.find(requireString(input, 'SecretId'), 'UpdateSecretVersionStage');
    const stage = requireString(input, 'VersionStage');
    const moveTo = optionalString(input, 'MoveToVersionId');
    const removeFrom = optionalString(input, 'RemoveFromVersionId');
    const holder = holderOf(secret, stage);
    if (moveTo !== undefined) {
      const target = secret.versions.get(moveTo);
      if (target === undefined) {
        throw new AwsError('InvalidParameterException', `The version ${moveTo} of the secret ${secret.name} doesn't exist.`);
      }
      if (holder !== undefined && holder !== target && removeFrom !== holder.versionId) {
        throw new AwsError('InvalidParameterException', `The parameter RemoveFromVersionId doesn't match the current version holding the staging label ${stage}.`);
      }
      attachStage(secret, stage, target);
    } else if (removeFrom !== undefined) {
      if (holder === undefined || holder.versionId !== removeFrom) {
        throw new AwsError('InvalidParameterException', `The staging label ${stage} isn't attached to version ${removeFrom}.`);
      }
      if (stage === CURRENT) {
        throw new AwsError('InvalidParameterException', 'You can only move staging label AWSCURRENT to a different secret version. It can\'t be completely removed.');
      }
      holder.stages.delete(stage);
    } else {
      throw new AwsError('InvalidParameterException', 'You must specify MoveToVersionId or RemoveFromVersionId.');
    }
    secret.lastChangedMs = this.ctx.nowMs();
    return { ARN: secret.arn, Name: secret.name };
  }

  private getSecretValue(input: Record<string, unknown>): unknown {
    const secret = this.find(requireString(input, 'SecretId'), 'GetSecretValue');
    const version = this.pickVersion(secret, optionalString(input, 'VersionId'), optionalString(input, 'VersionStage'));
    return this.valueOf(secret, version);
  }

  private batchGetSecretValue(input: Record<string, unknown>): unknown {
    const ids = optionalStringList(input, 'SecretIdList');
    const filters = input['Filters'];
    if ((ids === undefined) === (filters === undefined)) {
      throw new AwsError('InvalidParameterException', 'Either SecretIdList or Filters must be provided, but not both.');
    }
    if (ids !== undefined) {
      if (ids.length < 1 || ids.length > BATCH_MAX_IDS) {
        throw validation(`1 validation error detected: Value at 'secretIdList' failed to satisfy constraint: Member must have length less than or equal to ${BATCH_MAX_IDS}`);
      }
      const values: unknown[] = [];
      const errors: unknown[] = [];
      for (const id of ids) {
        try {
          const secret = this.find(id, 'GetSecretValue');
          values.push(this.valueOf(secret, this.pickVersion(secret, undefined, undefined)));
        } catch (e) {
          if (!(e instanceof AwsError)) throw e;
          errors.push({ SecretId: id, ErrorCode: e.code, Message: e.message });
        }
      }
      return { SecretValues: values, Errors: errors };
    }
    return this.batchByFilters(filters, input);
  }

  private batchByFilters(filters: unknown, input: Record<string, unknown>): unknown {
    if (!Array.isArray(filters)) throw validation('Filters must be a list');
    const prefixes: string[] = [];
    for (const f of filters as unknown[]) {
      const { Key, Values } = (f ?? {}) as Record<string, unknown>;
      if (Key === 'all') continue;
      if (Key !== 'name' || !Array.isArray(Values)) {
        throw new AwsError('InvalidParameterException', 'Only the "name" and "all" filter keys are supported here.');
      }
      for (const v of Values) if (typeof v === 'string') prefixes.push(v);
    }
    const maxResults = typeof input['MaxResults'] === 'number' ? input['MaxResults'] : 20;
    if (maxResults < 1 || maxResults > 20) throw validation('MaxResults must be between 1 and 20');
    const scope = `batch:${prefixes.join(',')}`;
    const token = optionalString(input, 'NextToken');
    const start = token === undefined ? 0 : decodePageToken(token, scope)?.offset;
    if (start === undefined) throw new AwsError('InvalidNextTokenException', 'The NextToken value is invalid.');
    const matching = [...this.secrets.values()]
      .filter((s) => prefixes.length === 0 || prefixes.some((p) => s.name.startsWith(p)))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
    const values: unknown[] = [];
    const errors: unknown[] = [];
    for (const s of matching.slice(start, start + maxResults)) {
      try {
        this.checkAllowed(s.name, s.name, 'GetSecretValue');
        values.push(this.valueOf(s, this.pickVersion(s, undefined, undefined)));
      } catch (e) {
        if (!(e instanceof AwsError)) throw e;
        errors.push({ SecretId: s.name, ErrorCode: e.code, Message: e.message });
      }
    }
    const next = start + maxResults < matching.length ? encodePageToken(start + maxResults, 0, scope) : undefined;
    return next === undefined ? { SecretValues: values, Errors: errors } : { SecretValues: values, Errors: errors, NextToken: next };
  }

  private describeSecret(input: Record<string, unknown>): unknown {
    const secret = this.find(requireString(input, 'SecretId'), 'DescribeSecret');
    const stages: Record<string, string[]> = {};
    for (const v of secret.versions.values()) if (v.stages.size > 0) stages[v.versionId] = [...v.stages];
    return {
      ARN: secret.arn,
      Name: secret.name,
      ...(secret.description !== undefined ? { Description: secret.description } : {}),
      ...(secret.kmsKeyId !== undefined ? { KmsKeyId: secret.kmsKeyId } : {}),
      RotationEnabled: false,
      CreatedDate: epochSeconds(secret.createdMs),
      LastChangedDate: epochSeconds(secret.lastChangedMs),
      VersionIdsToStages: stages,
    };
  }

  private listSecretVersionIds(input: Record<string, unknown>): unknown {
    const secret = this.find(requireString(input, 'SecretId'), 'ListSecretVersionIds');
    const includeDeprecated = optionalBoolean(input, 'IncludeDeprecated');
    const versions = [...secret.versions.values()]
      .filter((v) => includeDeprecated || v.stages.size > 0)
      .map((v) => ({
        VersionId: v.versionId,
        VersionStages: [...v.stages],
        CreatedDate: epochSeconds(v.createdMs),
        ...(v.lastAccessedMs !== undefined ? { LastAccessedDate: epochSeconds(v.lastAccessedMs) } : {}),
      }));
    return { ARN: secret.arn, Name: secret.name, Versions: versions };
  }

  private addVersion(secret: Secret, versionId: string, value: SecretValue, stages: string[]): SecretVersion {
    if (stages.length > 20) throw new AwsError('LimitExceededException', 'A version can have at most 20 staging labels.');
    const version: SecretVersion = {
      versionId,
      ...value,
      stages: new Set(),
      createdMs: this.ctx.nowMs(),
    };
    secret.versions.set(versionId, version);
    for (const stage of stages) attachStage(secret, stage, version);
    secret.lastChangedMs = version.createdMs;
    return version;
  }

  private pickVersion(secret: Secret, versionId: string | undefined, stage: string | undefined): SecretVersion {
    if (versionId !== undefined) {
      const v = secret.versions.get(versionId);
      if (v === undefined) {
        throw new AwsError('ResourceNotFoundException', `Secrets Manager can't find the specified secret value for VersionId: ${versionId}`);
      }
      if (stage !== undefined && !v.stages.has(stage)) {
        throw new AwsError('ResourceNotFoundException', `Secrets Manager can't find the specified secret value for staging label: ${stage}`);
      }
      return v;
    }
    const label = stage ?? CURRENT;
    const v = holderOf(secret, label);
    if (v === undefined) {
      throw new AwsError('ResourceNotFoundException', `Secrets Manager can't find the specified secret value for staging label: ${label}`);
    }
    return v;
  }

  private valueOf(secret: Secret, v: SecretVersion): unknown {
    v.lastAccessedMs = this.ctx.nowMs();
    return {
      ARN: secret.arn,
      Name: secret.name,
      VersionId: v.versionId,
      ...(v.string !== undefined ? { SecretString: v.string } : {}),
      ...(v.binary !== undefined ? { SecretBinary: v.binary.toString('base64') } : {}),
      VersionStages: [...v.stages],
      CreatedDate: epochSeconds(v.createdMs),
    };
  }

  /** By name, full ARN, or ARN without the random suffix, as AWS accepts. */
  private find(secretId: string, action: string): Secret {
    let found = this.secrets.get(secretId);
    if (found === undefined && secretId.startsWith('arn:')) {
      for (const s of this.secrets.values()) {
        if (s.arn === secretId || s.arn.slice(0, -7) === secretId) found = s;
      }
    }
    this.checkAllowed(found?.name ?? secretId, secretId, action);
    if (found === undefined) {
      throw new AwsError('ResourceNotFoundException', 'Secrets Manager can\'t find the specified secret.');
    }
    return found;
  }

  private checkAllowed(name: string, asGiven: string, action: string): void {
    if (!this.denied.has(name)) return;
    throw new AwsError(
      'AccessDeniedException',
      `User: arn:aws:iam::${this.ctx.accountId}:user/certd is not authorized to perform: secretsmanager:${action} ` +
        `on resource: ${asGiven} because no resource-based policy allows the secretsmanager:${action} action`,
    );
  }
}

type SecretValue = { string: string } | { binary: Buffer };

function readValue(input: Record<string, unknown>, required: boolean): SecretValue | undefined {
  const s = optionalString(input, 'SecretString');
  const b = optionalBlob(input, 'SecretBinary');
  if (s !== undefined && b !== undefined) {
    throw new AwsError('InvalidParameterException', 'You can\'t specify both SecretString and SecretBinary.');
  }
  if (s === undefined && b === undefined) {
    if (required) throw new AwsError('InvalidRequestException', 'You must provide either SecretString or SecretBinary.');
    return undefined;
  }
  const size = s !== undefined ? Buffer.byteLength(s) : b!.length;
  if (size > MAX_SECRET_BYTES) throw validation(`Secret value exceeds ${MAX_SECRET_BYTES} bytes`);
  return s !== undefined ? { string: s } : { binary: b! };
}

/** ClientRequestToken becomes the version id; the SDKs and the CLI always fill one in. */
function versionIdFrom(input: Record<string, unknown>): string {
  const token = optionalString(input, 'ClientRequestToken');
  if (token === undefined) return randomUUID();
  if (token.length < 32 || token.length > 64) {
    throw validation('ClientRequestToken must be between 32 and 64 characters');
  }
  return token;
}

function sameValue(v: SecretVersion, value: SecretValue): boolean {
  if ('string' in value) return v.string === value.string;
  return v.binary !== undefined && v.binary.equals(value.binary);
}

function holderOf(secret: Secret, stage: string): SecretVersion | undefined {
  for (const v of secret.versions.values()) if (v.stages.has(stage)) return v;
  return undefined;
}

function attachStage(secret: Secret, stage: string, target: SecretVersion): void {
  const holder = holderOf(secret, stage);
  if (holder === target) return;
  if (holder !== undefined) {
    holder.stages.delete(stage);
    if (stage === CURRENT) {
      holderOf(secret, PREVIOUS)?.stages.delete(PREVIOUS);
      holder.stages.add(PREVIOUS);
    }
  }
  target.stages.add(stage);
}
