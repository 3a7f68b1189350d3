// The error a peer operation throws; the server turns it into AWS's JSON 1.1 error response.
// `code` is the shape name the SDK and botocore expose (`error.name` / `Error.Code`): both keep
// the part of `__type` after `#`, so the namespace is AWS's but only the code is contract.
export class AwsError extends Error {
  readonly code: string;
  readonly status: number;

  constructor(code: string, message: string, status = 400) {
    super(message);
    this.name = 'AwsError';
    this.code = code;
    this.status = status;
  }
}

export function validation(message: string): AwsError {
  return new AwsError('ValidationException', message);
}

/** A required string member, else the ValidationException AWS gives for a missing member. */
export function requireString(input: Record<string, unknown>, member: string): string {
  const v = input[member];
  if (typeof v !== 'string' || v.length === 0) {
    throw validation(`1 validation error detected: Value null at '${lowerFirst(member)}' failed to satisfy constraint: Member must not be null`);
  }
  return v;
}

export function optionalString(input: Record<string, unknown>, member: string): string | undefined {
  const v = input[member];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw validation(`Value at '${lowerFirst(member)}' must be a string`);
  return v;
}

export function optionalBoolean(input: Record<string, unknown>, member: string): boolean {
  const v = input[member];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw validation(`Value at '${lowerFirst(member)}' must be a boolean`);
  return v;
}

export function optionalStringList(input: Record<string, unknown>, member: string): string[] | undefined {
  const v = input[member];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string')) {
    throw validation(`Value at '${lowerFirst(member)}' must be a list of strings`);
  }
  return v;
}

/** Blob members travel as base64; AWS refuses text that is not base64. */
export function optionalBlob(input: Record<string, unknown>, member: string): Buffer | undefined {
  const v = optionalString(input, member);
  if (v === undefined) return undefined;
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) {
    throw new AwsError('SerializationException', `Value at '${lowerFirst(member)}' is not valid base64`);
  }
  return Buffer.from(v, 'base64');
}

export function requireBlob(input: Record<string, unknown>, member: string): Buffer {
  const b = optionalBlob(input, member);
  if (b === undefined || b.length === 0) {
    throw validation(`1 validation error detected: Value null at '${lowerFirst(member)}' failed to satisfy constraint: Member must not be null`);
  }
  return b;
}

function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}
