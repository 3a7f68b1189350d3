/**
 * The few DER primitives the policy reads by hand, where the schema decoder would cost more or
 * would not keep the byte ranges (extension lists, name constraints, subject public keys).
 * Definite lengths only, as DER requires; anything malformed throws.
 */

/** Largest element a certificate can hold: the whole input is capped at 1 MiB before this. */
const MAX_LENGTH_BYTES = 4;

function bounds(tlv: Buffer, at: number): { start: number; end: number } {
  let pos = at + 1;
  const first = tlv[pos++];
  if (first === undefined) throw new Error('DER element cut short');
  let len = first;
  if (first & 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > MAX_LENGTH_BYTES) throw new Error('DER length not definite or too long');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (tlv[pos++] ?? Number.NaN);
  }
  const end = pos + len;
  if (!(end <= tlv.length)) throw new Error('DER element overruns its container');
  return { start: pos, end };
}

/** The TLVs inside one constructed DER element, as views of `tlv`. */
export function derChildren(tlv: Buffer): Buffer[] {
  const outer = bounds(tlv, 0);
  const children: Buffer[] = [];
  for (let at = outer.start; at < outer.end; ) {
    const { end } = bounds(tlv, at);
    children.push(tlv.subarray(at, end));
    at = end;
  }
  return children;
}

/** The value (content octets) of one TLV. */
export function derValue(tlv: Buffer): Buffer {
  const { start, end } = bounds(tlv, 0);
  return tlv.subarray(start, end);
}
