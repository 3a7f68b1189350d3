// SSM Parameter Store (target prefix AmazonSSM). SecureString values are really encrypted with
// the KMS emulation, under the key given or AWS's managed `alias/aws/ssm`, with the encryption
// context AWS uses ({"PARAMETER_ARN": arn}); without WithDecryption the caller sees that blob.
// DescribeParameters answers metadata only (never a value) through ParameterFilters; the peer
// keeps no tags, descriptions or writers, so `tag:` filters match nothing and LastModifiedUser,
// Description and AllowedPattern are never in an answer.
import {
  AwsError, optionalBoolean, optionalString, optionalStringList, requireString, validation,
} from './aws-error.js';
import type { KmsService } from './aws-kms.js';
import type { EmulatedService, Operation, ServiceContext } from './aws-service.js';
import { decodePageToken, encodePageToken, epochSeconds } from './aws-service.js';

type ParameterType = 'String' | 'StringList' | 'SecureString';
type Tier = 'Standard' | 'Advanced';
const TIER_LIMIT: Record<Tier, number> = { Standard: 4096, Advanced: 8192 };

interface ParameterVersion {
  readonly version: number;
  readonly type: ParameterType;
  readonly tier: Tier;
  /** Clear text for String/StringList; the KMS blob for SecureString. */
  readonly stored: Buffer;
  readonly modifiedMs: number;
  /** SecureString only: the KMS key as the caller named it (AWS's `alias/aws/ssm` by default). */
  readonly keyId?: string;
}

interface Parameter {
  readonly name: string;
  readonly arn: string;
  readonly history: ParameterVersion[];
}

export interface SsmOptions {
  /**
   * Answer GetParametersByPath and DescribeParameters with short and even empty pages that still
   * carry a NextToken (AWS does: both stop at an internal limit and return what they have).
   */
  shortPages?: boolean;
}

/** One ParameterStringFilter of DescribeParameters, validated. */
interface DescribeFilter {
  readonly key: string;
  readonly option: string;
  readonly values: readonly string[];
}

const FILTER_KEY = /^(tag:.+|Name|Type|KeyId|Path|Label|Tier|DataType)$/;

export class SsmService implements EmulatedService {
  readonly targetPrefix = 'AmazonSSM';
  readonly signingName = 'ssm';
  readonly errorNamespace = 'com.amazonaws.ssm';
  readonly internalError = { code: 'InternalServerError', message: 'An error occurred on the server side.' };
  readonly operations: Readonly<Record<string, Operation>>;
  shortPages: boolean;

  private readonly params = new Map<string, Parameter>();
  /** Bumped by every write: a listing remembered from an older generation is stale. */
  private generation = 0;
  /** The sorted names the last query matched, so that its next pages do not filter and sort again. */
  private listed: { scope: string; generation: number; names: readonly string[] } | undefined;

  constructor(private readonly ctx: ServiceContext, private readonly kms: KmsService, opts: SsmOptions = {}) {
    this.shortPages = opts.shortPages ?? false;
    this.operations = {
      PutParameter: (i) => this.putParameter(i),
      GetParameter: (i) => this.getParameter(i),
      GetParameters: (i) => this.getParameters(i),
      GetParametersByPath: (i) => this.getParametersByPath(i),
      DescribeParameters: (i) => this.describeParameters(i),
      DeleteParameter: (i) => this.deleteParameter(i),
    };
  }

  private putParameter(input: Record<string, unknown>): unknown {
    const name = requireString(input, 'Name');
    validateName(name);
    const value = requireString(input, 'Value');
    const existing = this.params.get(name);
    if (existing !== undefined && !optionalBoolean(input, 'Overwrite')) {
      throw new AwsError('ParameterAlreadyExists', 'The parameter already exists. To overwrite this value, set the overwrite option in the request to true.');
    }
    const last = existing?.history.at(-1);
    const typeIn = optionalString(input, 'Type');
    if (typeIn !== undefined && !['String', 'StringList', 'SecureString'].includes(typeIn)) {
      throw validation(`1 validation error detected: Value '${typeIn}' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [SecureString, StringList, String]`);
    }
    const type = (typeIn ?? last?.type) as ParameterType | undefined;
    if (type === undefined) throw validation('A parameter type is required when you create a parameter.');
    const tierIn = optionalString(input, 'Tier') ?? 'Standard';
    const size = Buffer.byteLength(value);
    let tier: Tier;
    if (tierIn === 'Intelligent-Tiering') tier = size > TIER_LIMIT.Standard ? 'Advanced' : 'Standard';
    else if (tierIn === 'Standard' || tierIn === 'Advanced') tier = tierIn;
    else throw validation(`Tier ${tierIn} is not Standard, Advanced or Intelligent-Tiering`);
    if (size > TIER_LIMIT[tier]) {
      throw validation(tier === 'Standard'
        ? 'Standard tier parameters support a maximum parameter value of 4096 characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier. For more information, see https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html'
        : 'Advanced tier parameters support a maximum parameter value of 8192 characters.');
    }
    const arn = existing?.arn ?? parameterArn(this.ctx, name);
    let stored: Buffer = Buffer.from(value, 'utf8');
    if (type === 'SecureString') {
      const keyRef = optionalString(input, 'KeyId');
      let key;
      try {
        key = keyRef === undefined ? this.kms.managedKey('alias/aws/ssm') : this.kms.resolve(keyRef);
      } catch {
        throw new AwsError('InvalidKeyId', `The query key ID isn't valid.`);
      }
      stored = this.kms.encryptWith(key.keyId, stored, { PARAMETER_ARN: arn });
    }
    const keyId = type === 'SecureString' ? (optionalString(input, 'KeyId') ?? 'alias/aws/ssm') : undefined;
    const version: ParameterVersion = { version: (last?.version ?? 0) + 1, type, tier, stored, modifiedMs: this.ctx.nowMs(), ...(keyId === undefined ? {} : { keyId }) };
    this.generation++;
    if (existing === undefined) this.params.set(name, { name, arn, history: [version] });
    else existing.history.push(version);
    return { Version: version.version, Tier: tier };
  }

  private getParameter(input: Record<string, unknown>): unknown {
    const found = this.lookup(requireString(input, 'Name'));
    return { Parameter: this.render(found, optionalBoolean(input, 'WithDecryption')) };
  }

  private getParameters(input: Record<string, unknown>): unknown {
    const names = optionalStringList(input, 'Names') ?? [];
    if (names.length < 1 || names.length > 10) {
      throw validation(`1 validation error detected: Value '[${names.join(', ')}]' at 'names' failed to satisfy constraint: Member must have length less than or equal to 10`);
    }
    const decrypt = optionalBoolean(input, 'WithDecryption');
    const parameters: unknown[] = [];
    const invalid: string[] = [];
    for (const name of new Set(names)) {
      try {
        parameters.push(this.render(this.lookup(name), decrypt));
      } catch (e) {
        if (!(e instanceof AwsError) || !e.code.startsWith('Parameter')) throw e;
        invalid.push(name);
      }
    }
    return { Parameters: parameters, InvalidParameters: invalid };
  }

  private getParametersByPath(input: Record<string, unknown>): unknown {
    const path = requireString(input, 'Path');
    if (!path.startsWith('/')) throw validation('The parameter doesn\'t meet the parameter name requirements. The parameter name must begin with a forward slash "/".');
    const recursive = optionalBoolean(input, 'Recursive');
    const decrypt = optionalBoolean(input, 'WithDecryption');
    const max = input['MaxResults'] ?? 10;
    if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > 10) {
      throw validation(`1 validation error detected: Value '${String(max)}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 10`);
    }
    const prefix = path === '/' ? '/' : `${path.replace(/\/+$/, '')}/`;
    const scope = `${prefix}|${recursive}`;
    const matching = this.listing(scope, () => [...this.params.keys()]
      .filter((n) => n.startsWith(prefix) && (recursive || !n.slice(prefix.length).includes('/')))
      .sort());
    return this.page(input, matching, max, scope, (n) => this.render({ param: this.params.get(n)!, version: this.params.get(n)!.history.at(-1)! }, decrypt));
  }

  /** The names a query matches, from its last answer while nothing has been written since. */
  private listing(scope: string, list: () => string[]): readonly string[] {
    if (this.listed?.scope === scope && this.listed.generation === this.generation) return this.listed.names;
    const names = list();
    this.listed = { scope, generation: this.generation, names };
    return names;
  }

  /** One page of `matching` names from the request's NextToken, rendered, with the next token if any. */
  private page(input: Record<string, unknown>, matching: readonly string[], max: number, scope: string, render: (name: string) => unknown): unknown {
    const token = optionalString(input, 'NextToken');
    const pos = token === undefined ? { offset: 0, page: 0 } : decodePageToken(token, scope);
    if (pos === undefined) throw new AwsError('InvalidNextToken', 'The specified token isn\'t valid.');
    const size = this.shortPages ? shortPageSize(pos.page, max) : max;
    const names = matching.slice(pos.offset, pos.offset + size);
    const end = pos.offset + names.length;
    const out: Record<string, unknown> = { Parameters: names.map(render) };
    if (end < matching.length) out['NextToken'] = encodePageToken(end, pos.page + 1, scope);
    return out;
  }

  /**
   * Metadata of the parameters every filter matches (filters AND, values of one filter OR), by
   * name, MaxResults 1..50 a page (AWS documents no default; the peer takes GetParametersByPath's
   * 10, so a client that relies on an unstated default gets small pages). `Path` takes Recursive or OneLevel (the default);
   * `Name` Equals, BeginsWith or Contains; the others Equals or BeginsWith. `Label` is refused
   * (it belongs to GetParametersByPath), as AWS does. `Shared: true` lists parameters other
   * accounts share, of which the peer has none.
   */
  private describeParameters(input: Record<string, unknown>): unknown {
    const max = input['MaxResults'] ?? 10;
    if (typeof max !== 'number' || !Number.isInteger(max) || max < 1 || max > 50) {
      const bound = typeof max === 'number' && max < 1 ? 'greater than or equal to 1' : 'less than or equal to 50';
      throw validation(`1 validation error detected: Value '${String(max)}' at 'maxResults' failed to satisfy constraint: Member must have value ${bound}`);
    }
    if (input['Filters'] !== undefined && input['ParameterFilters'] !== undefined) {
      throw validation('You can use either Filters or ParameterFilters in a single request.');
    }
    if (input['Filters'] !== undefined) {
      throw validation('this test peer does not implement the deprecated Filters member; use ParameterFilters');
    }
    const filters = parseDescribeFilters(input['ParameterFilters']);
    const shared = optionalBoolean(input, 'Shared');
    const scope = `describe|${JSON.stringify(filters)}|${shared}`;
    const matching = shared ? [] : this.listing(scope, () => [...this.params.values()]
      .filter((p) => filters.every((f) => this.matches(p, f)))
      .map((p) => p.name)
      .sort());
    return this.page(input, matching, max, scope, (n) => this.metadata(this.params.get(n)!));
  }

  private matches(param: Parameter, f: DescribeFilter): boolean {
    const latest = param.history.at(-1)!;
    if (f.key === 'Path') {
      return f.values.some((v) => {
        const prefix = v === '/' ? '/' : `${v.replace(/\/+$/, '')}/`;
        return param.name.startsWith(prefix) && (f.option === 'Recursive' || !param.name.slice(prefix.length).includes('/'));
      });
    }
    if (f.key.startsWith('tag:')) return false;
    const field = f.key === 'Name' ? param.name
      : f.key === 'Type' ? latest.type
        : f.key === 'Tier' ? latest.tier
          : f.key === 'DataType' ? 'text'
            : latest.keyId;
    if (field === undefined) return false;
    return f.values.some((v) => (f.option === 'BeginsWith' ? field.startsWith(v) : f.option === 'Contains' ? field.includes(v) : field === v));
  }

  private metadata(param: Parameter): unknown {
    const latest = param.history.at(-1)!;
    return {
      Name: param.name,
      ARN: param.arn,
      Type: latest.type,
      ...(latest.keyId === undefined ? {} : { KeyId: latest.keyId }),
      LastModifiedDate: epochSeconds(latest.modifiedMs),
      Version: latest.version,
      Tier: latest.tier,
      Policies: [],
      DataType: 'text',
    };
  }

  private deleteParameter(input: Record<string, unknown>): unknown {
    const name = requireString(input, 'Name');
    if (!this.params.delete(name)) throw new AwsError('ParameterNotFound', '');
    this.generation++;
    return {};
  }

  /** Name, ARN, `name:version`; AWS answers an unknown one with an empty message. */
  private lookup(ref: string): { param: Parameter; version: ParameterVersion; selector?: string } {
    let nameRef = ref;
    const arnPrefix = `arn:aws:ssm:${this.ctx.region}:${this.ctx.accountId}:parameter`;
    if (nameRef.startsWith(arnPrefix)) nameRef = nameRef.slice(arnPrefix.length);
    const colon = nameRef.indexOf(':');
    const selector = colon === -1 ? undefined : nameRef.slice(colon + 1);
    const name = colon === -1 ? nameRef : nameRef.slice(0, colon);
    const param = this.params.get(name) ?? (ref.startsWith(arnPrefix) ? this.params.get(name.slice(1)) : undefined);
    if (param === undefined) throw new AwsError('ParameterNotFound', '');
    if (selector === undefined) return { param, version: param.history.at(-1)! };
    const version = /^\d+$/.test(selector) ? param.history.find((v) => v.version === Number(selector)) : undefined;
    if (version === undefined) {
      throw new AwsError('ParameterVersionNotFound', `Systems Manager could not find version ${selector} of ${name}. Verify the version and try again.`);
    }
    return { param, version, selector: `:${selector}` };
  }

  private render(found: { param: Parameter; version: ParameterVersion; selector?: string }, decrypt: boolean): unknown {
    const { param, version } = found;
    let value: string;
    if (version.type !== 'SecureString') value = version.stored.toString('utf8');
    else if (!decrypt) value = version.stored.toString('base64');
    else value = this.kms.decryptBlob(version.stored, { PARAMETER_ARN: param.arn }).plaintext.toString('utf8');
    return {
      Name: param.name,
      Type: version.type,
      Value: value,
      Version: version.version,
      ...(found.selector !== undefined ? { Selector: found.selector } : {}),
      LastModifiedDate: epochSeconds(version.modifiedMs),
      ARN: param.arn,
      DataType: 'text',
    };
  }
}

/** ParameterFilters as DescribeParameters validates them: key pattern, option per key, values. */
function parseDescribeFilters(raw: unknown): DescribeFilter[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw validation('Value at \'parameterFilters\' must be a list');
  return raw.map((f: unknown, i) => {
    if (typeof f !== 'object' || f === null || Array.isArray(f)) throw validation(`Value at 'parameterFilters.${i + 1}.member' must be a structure`);
    const entry = f as Record<string, unknown>;
    const key = requireString(entry, 'Key');
    if (key.length > 132 || !FILTER_KEY.test(key)) {
      throw validation(`1 validation error detected: Value '${key}' at 'parameterFilters.${i + 1}.member.key' failed to satisfy constraint: Member must satisfy regular expression pattern: tag:.+|Name|Type|KeyId|Path|Label|Tier|DataType`);
    }
    if (key === 'Label') throw new AwsError('InvalidFilterKey', '');
    const options = key === 'Path' ? ['Recursive', 'OneLevel'] : key === 'Name' ? ['Equals', 'BeginsWith', 'Contains'] : ['Equals', 'BeginsWith'];
    const option = optionalString(entry, 'Option') ?? (key === 'Path' ? 'OneLevel' : 'Equals');
    if (!options.includes(option)) {
      throw new AwsError('InvalidFilterOption', 'The specified filter option isn\'t valid. Valid options are Equals and BeginsWith. For Path filter, valid options are Recursive and OneLevel.');
    }
    const values = optionalStringList(entry, 'Values') ?? [];
    if (values.length > 50 || values.some((v) => v.length < 1 || v.length > 1024)) {
      throw validation(`1 validation error detected: Value at 'parameterFilters.${i + 1}.member.values' failed to satisfy constraint: Member must have length between 1 and 50, each 1 to 1024 characters`);
    }
    if (values.length === 0 && !key.startsWith('tag:')) throw new AwsError('InvalidFilterValue', `The filter value isn't valid. Verify the value and try again.`);
    if (key === 'Path' && values.some((v) => !v.startsWith('/'))) {
      throw new AwsError('InvalidFilterValue', 'The filter value isn\'t valid. A Path filter value must begin with a forward slash "/".');
    }
    return { key, option, values };
  });
}

/** A cycle of half, empty and single-item pages: every cycle still makes progress. */
function shortPageSize(page: number, max: number): number {
  const phase = page % 3;
  return phase === 0 ? Math.max(1, Math.ceil(max / 2)) : phase === 1 ? 0 : 1;
}

function validateName(name: string): void {
  const ok = /^[A-Za-z0-9_.\-/]{1,2048}$/.test(name)
    && !/^\/?(aws|ssm)/i.test(name)
    && (!name.includes('/') || name.startsWith('/'))
    && !name.includes('//');
  if (!ok) {
    throw validation('Parameter name: can\'t be prefixed with "aws" or "ssm" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_');
  }
}

function parameterArn(ctx: ServiceContext, name: string): string {
  return `arn:aws:ssm:${ctx.region}:${ctx.accountId}:parameter${name.startsWith('/') ? '' : '/'}${name}`;
}
