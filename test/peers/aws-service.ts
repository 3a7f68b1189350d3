// What each emulated service shares with the server that hosts it.
export interface ServiceContext {
  region: string;
  accountId: string;
  /** Wall clock in epoch milliseconds; injected so tests can move time. */
  nowMs(): number;
}

/** One operation: decoded JSON input in, JSON-serialisable output out; AwsError for failures. */
export type Operation = (input: Record<string, unknown>) => unknown;

export interface EmulatedService {
  /** The X-Amz-Target prefix, e.g. `secretsmanager`, `AmazonSSM`, `TrentService`. */
  readonly targetPrefix: string;
  /** The SigV4 signing name, e.g. `secretsmanager`, `ssm`, `kms`. */
  readonly signingName: string;
  /** The namespace AWS puts before `#` in `__type`. */
  readonly errorNamespace: string;
  /** Code and message of the service's own 500 / 503 answers. */
  readonly internalError: { code: string; message: string };
  readonly operations: Readonly<Record<string, Operation>>;
}

/** AWS timestamps in JSON 1.1 are epoch seconds, fractional allowed. */
export function epochSeconds(ms: number): number {
  return ms / 1000;
}

/** An opaque page token that differs for every page, even an empty one, as botocore's paginator
 * refuses a token that repeats. */
export function encodePageToken(offset: number, page: number, scope: string): string {
  return Buffer.from(JSON.stringify({ o: offset, p: page, s: scope })).toString('base64');
}

export function decodePageToken(token: string, scope: string): { offset: number; page: number } | undefined {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, 'base64').toString('utf8'));
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const { o, p, s } = parsed as Record<string, unknown>;
    if (typeof o !== 'number' || typeof p !== 'number' || s !== scope) return undefined;
    return { offset: o, page: p };
  } catch {
    return undefined;
  }
}
