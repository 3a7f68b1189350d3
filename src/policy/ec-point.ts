/**
 * Partial public-key validation of an EC point (SP 800-56A r3 5.6.2.3.4) for the approved prime
 * curves: the encoding is a point (not infinity), its coordinates are field elements, and it
 * satisfies the curve equation. With cofactor 1 (P-256, P-384, P-521) that is full validation.
 * OpenSSL refuses an off-curve point only when the key is loaded, which nothing does for a
 * certificate whose private key stays in an HSM.
 */

interface PrimeCurve {
  readonly p: bigint;
  /** a = -3 for all three curves. */
  readonly b: bigint;
  readonly bytes: number;
}

const PRIME_CURVES: Readonly<Record<string, PrimeCurve>> = {
  'P-256': {
    p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
    b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
    bytes: 32,
  },
  'P-384': {
    p: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
    b: 0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
    bytes: 48,
  },
  'P-521': {
    p: (1n << 521n) - 1n,
    b: 0x0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00n,
    bytes: 66,
  },
};

function toBig(b: Buffer): bigint {
  return b.length === 0 ? 0n : BigInt(`0x${b.toString('hex')}`);
}

function modPow(base: bigint, exp: bigint, m: bigint): bigint {
  let result = 1n;
  let x = base % m;
  for (let e = exp; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * x) % m;
    x = (x * x) % m;
  }
  return result;
}

/** Curves whose points certd validates. */
export function validatesPointsOn(curve: string): boolean {
  return curve in PRIME_CURVES;
}

/**
 * Why `point` (the subjectPublicKey octets: 04||X||Y, or 02/03||X compressed) is not a valid
 * public key on `curve`, or undefined when it is one (or the curve is not one certd validates).
 */
export function ecPointProblem(curve: string, point: Buffer): string | undefined {
  const c = PRIME_CURVES[curve];
  if (!c) return undefined;
  const form = point[0];
  if (point.length === 1 && form === 0x00) return 'the public key is the point at infinity';
  const rhs = (x: bigint): bigint => (((x * x * x - 3n * x + c.b) % c.p) + c.p) % c.p;
  if (form === 0x04) {
    if (point.length !== 1 + 2 * c.bytes) return `an uncompressed ${curve} point is ${1 + 2 * c.bytes} bytes, this one ${point.length}`;
    const x = toBig(point.subarray(1, 1 + c.bytes));
    const y = toBig(point.subarray(1 + c.bytes));
    if (x >= c.p || y >= c.p) return 'a coordinate of the public key is not below the field prime';
    if ((y * y) % c.p !== rhs(x)) return `the public key is not a point on ${curve} (y^2 != x^3 - 3x + b)`;
    return undefined;
  }
  if (form === 0x02 || form === 0x03) {
    if (point.length !== 1 + c.bytes) return `a compressed ${curve} point is ${1 + c.bytes} bytes, this one ${point.length}`;
    const x = toBig(point.subarray(1));
    if (x >= c.p) return 'the public key\'s x coordinate is not below the field prime';
    const v = rhs(x);
    // Euler's criterion: x^3 - 3x + b must be a square for some y to exist.
    if (v !== 0n && modPow(v, (c.p - 1n) / 2n, c.p) !== 1n) return `no point on ${curve} has this x coordinate`;
    return undefined;
  }
  return `the public key's point encoding starts with 0x${(form ?? 0).toString(16).padStart(2, '0')}, not 02, 03 or 04`;
}
