// In-memory wasi:keyvalue/store for scripts/smoke-examples.sh: bucket "default" only.
export const data = new Map();
export class Bucket {
  get(key) { if (key.length > 256) throw {tag:'other', val:'key too long'}; return data.has(key) ? data.get(key) : undefined; }
  set(key, value) { data.set(key, new Uint8Array(value)); }
  delete(key) { data.delete(key); }
  exists(key) { return data.has(key); }
  listKeys() { throw {tag:'other', val:'unsupported'}; }
}
export function open(id) { if (id !== 'default') throw {tag:'no-such-store'}; return new Bucket(); }
