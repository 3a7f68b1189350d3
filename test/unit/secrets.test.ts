import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';
import { CertdError, scrub } from '../../src/errors.js';
import { captureLogs, createLogger } from '../../src/log.js';
import { Secret } from '../../src/secret.js';

const keyPem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const keyBody = keyPem.split('\n')[1]!;

describe('secret hygiene by construction', () => {
  it('a Secret prints as [redacted] in every conversion', () => {
    const s = new Secret(keyPem);
    for (const text of [JSON.stringify({ s }), String(s), `${s}`, inspect(s), inspect({ nested: { s } })]) {
      assert.ok(!text.includes(keyBody), text);
      assert.match(text, /redacted/);
    }
    assert.equal(s.revealString(), keyPem);
  });

  it('scrub removes PEM blocks, base64 DER, access keys, signatures, PINs and request ids', () => {
    const text = scrub(`failed: ${keyPem} MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7 AKIAIOSFODNN7EXAMPLE Signature=abcdef0123456789abcdef pin-value=1234 RequestId: 8f3e2a1b-1234-5678 pin=4321 api_key=sekrit`);
    assert.ok(!text.includes(keyBody));
    for (const leaked of ['MIIEvQ', 'AKIAIOSFODNN7EXAMPLE', 'abcdef0123456789', '1234;', 'pin-value=1234', '8f3e2a1b', '4321', 'sekrit']) {
      assert.ok(!text.includes(leaked), `${leaked} survived: ${text}`);
    }
  });

  it('CertdError messages are scrubbed at construction', () => {
    const err = new CertdError('E_SOURCE', `fetching x: bad value ${keyPem}`);
    assert.ok(!err.message.includes(keyBody));
    assert.ok(!JSON.stringify(err.toJSON()).includes(keyBody));
  });

  it('the logger scrubs whatever reaches it, even a raw PEM in a field', () => {
    const lines: string[] = [];
    captureLogs((l) => lines.push(l));
    try {
      const log = createLogger({ level: 'debug', format: 'json', write: () => undefined });
      log.info({ oops: keyPem, secret: new Secret('hunter2'), err: new Error(`boom ${keyPem}`) }, `message with ${keyPem}`);
    } finally {
      captureLogs(undefined);
    }
    assert.equal(lines.length, 1);
    assert.ok(!lines[0]!.includes(keyBody), lines[0]);
    assert.ok(!lines[0]!.includes('hunter2'));
    const record = JSON.parse(lines[0]!);
    assert.equal(record.level, 'info');
  });
});
