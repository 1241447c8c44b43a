// wasi:keyvalue/atomics for scripts/smoke-examples.sh: counters are 8-byte little-endian u64, as in zz.
import { data } from './kv-store.js';
export function increment(bucket, key, delta) {
  let v = 0n;
  if (data.has(key)) { const b = data.get(key); if (b.length !== 8) throw {tag:'other', val:'not a counter'}; v = new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true); }
  v = v + delta;
  if (v > 0xffffffffffffffffn) throw {tag:'other', val:'overflow incrementing value'};
  const out = new Uint8Array(8); new DataView(out.buffer).setBigUint64(0, v, true); data.set(key, out);
  return v;
}
