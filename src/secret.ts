import { inspect } from 'node:util';

const REDACTED = '[redacted]';

/**
 * Secret bytes (a private key PEM, a PIN, an API key). The value is reachable only through
 * `reveal()`; JSON, `util.inspect`, string conversion and template literals all print
 * "[redacted]", so a Secret that slips into a log line or an error leaks nothing.
 */
export class Secret {
  readonly #value: Buffer;

  constructor(value: Buffer | string) {
    this.#value = Buffer.isBuffer(value) ? Buffer.from(value) : Buffer.from(value, 'utf8');
  }

  reveal(): Buffer {
    return this.#value;
  }

  revealString(): string {
    return this.#value.toString('utf8');
  }

  get length(): number {
    return this.#value.length;
  }

  equals(other: Secret): boolean {
    return this.#value.equals(other.#value);
  }

  /** Overwrites the bytes; the Secret is unusable afterwards. */
  wipe(): void {
    this.#value.fill(0);
  }

  toJSON(): string {
    return REDACTED;
  }

  toString(): string {
    return REDACTED;
  }

  [Symbol.toPrimitive](): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return `Secret(${REDACTED})`;
  }
}
