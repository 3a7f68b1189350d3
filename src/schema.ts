/** Schema pieces shared by the config and the providers' own config schemas. */
import { z } from 'zod';
import { parseDuration } from './duration.js';

/** A duration string ("30s", "7d") checked at load time. */
export const duration = (fallback: string) =>
  z.string().default(fallback).refine((v) => {
    try {
      parseDuration(v);
      return true;
    } catch {
      return false;
    }
  }, 'expected a duration such as 30s, 15m, 24h or 7d');

/** Key types an issuer can generate for the leaf. */
export const leafKeyType = z.enum(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096']).default('ec-p256');

/** Keys common to every issuer (local-ca, pkcs11-ca, kms-ca). */
export const issuerFields = {
  dns_names: z.array(z.string().min(1)).min(1, 'an issuer needs at least one DNS name'),
  subject: z.string().optional(),
  ttl: duration('24h'),
  key: leafKeyType,
};

/** A file path; relative paths are resolved against the config file's folder. */
export const pathString = z.string().min(1);
