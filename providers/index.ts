/**
 * Every provider certd knows, listed explicitly. A duplicate `type` is a programming error and
 * throws at start-up. Providers load their heavy dependencies (AWS SDK, pkcs11js) lazily, so
 * listing them here costs nothing until a certificate uses one.
 */
import type { SourceFactory, TargetFactory } from '../src/contracts.js';
import { fileSource } from './file.js';
import { localCaSource } from './local-ca.js';
import { pkcs11Source } from './pkcs11.js';
import { pkcs11CaSource } from './pkcs11-ca.js';
import { secretsManagerSource } from './secrets-manager.js';
import { ssmSource } from './ssm.js';
import { kmsCaSource } from './kms-ca.js';
import { acmSource } from './acm.js';
import { awsPrivateCaSource } from './aws-private-ca.js';
import { tmpfsTarget } from './tmpfs.js';
import { nginxPlusKeyvalTarget } from './nginx-plus-keyval.js';
import { apisixTarget } from './apisix.js';

export const sourceFactories: readonly SourceFactory[] = unique('source', [fileSource, localCaSource, pkcs11Source, pkcs11CaSource, secretsManagerSource, ssmSource, kmsCaSource, acmSource, awsPrivateCaSource] as SourceFactory[]);

export const targetFactories: readonly TargetFactory[] = unique('target', [tmpfsTarget, nginxPlusKeyvalTarget, apisixTarget] as TargetFactory[]);

function unique<T extends { type: string }>(what: string, list: T[]): readonly T[] {
  const seen = new Set<string>();
  for (const f of list) {
    if (seen.has(f.type)) throw new Error(`duplicate ${what} type "${f.type}" in providers/index.ts`);
    seen.add(f.type);
  }
  return Object.freeze(list);
}

export function sourceFactory(type: string): SourceFactory {
  const f = sourceFactories.find((s) => s.type === type);
  if (!f) throw new Error(`unknown source type "${type}"`);
  return f;
}

export function targetFactory(type: string): TargetFactory {
  const f = targetFactories.find((t) => t.type === type);
  if (!f) throw new Error(`unknown target type "${type}"`);
  return f;
}
