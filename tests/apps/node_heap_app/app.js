// A Node.js service that caches in its own heap, like the incident behind cache-exporter:
// an unbounded Map that grows at a steady rate until V8 aborts ("JavaScript heap out of
// memory", exit 134). Serves prom-client metrics on /metrics.
//
//   PORT                 HTTP port (required)
//   GROW_BYTES_PER_SEC   steady growth of the cache (default 1 MiB/s)
//   CHURN_BYTES_PER_SEC  per-request garbage that lives ~1 s (long enough to be promoted to the
//                        old generation): what makes V8 thrash in GC as the heap fills (default 0)
//   EXPORT_HEAP_LIMIT    "1": export nodejs_heap_size_limit_bytes (the collector docs/app-targets.md gives)
//   CACHE_MAX_ENTRIES    bound the cache (oldest entry evicted first): a healthy app whose heap
//                        saws under GC instead of growing (default 0: unbounded, the leak)
'use strict';
const http = require('http');
const v8 = require('v8');
const client = require('prom-client');

client.collectDefaultMetrics();

// --- the recipe of docs/app-targets.md: export V8's heap limit, which prom-client does not (yet) ---
if (process.env.EXPORT_HEAP_LIMIT === '1') {
  new client.Gauge({
    name: 'nodejs_heap_size_limit_bytes',
    help: 'V8 heap_size_limit: the old generation limit plus the young generation reserve.',
    collect() { this.set(v8.getHeapStatistics().heap_size_limit); },
  });
}

// --- an in-process cache, exposed the way docs/app-targets.md asks of a Node app: four series per cache,
// labelled `cache`, that cache-exporter maps to cache_hits_total, cache_misses_total,
// cache_evictions_total and cache_items{store="app"} ---
const labelNames = ['cache'];
const hits = new client.Counter({ name: 'cache_hits_total', help: 'Cache lookups that found the key.', labelNames });
const misses = new client.Counter({ name: 'cache_misses_total', help: 'Cache lookups that missed.', labelNames });
const evictions = new client.Counter({ name: 'cache_evictions_total', help: 'Entries evicted.', labelNames });
const entryCount = new client.Gauge({ name: 'cache_entries', help: 'Entries in the cache.', labelNames });
const cache = new Map();
const maxEntries = Number(process.env.CACHE_MAX_ENTRIES || 0);
const name = { cache: 'sessions' };
hits.inc(name, 0);
misses.inc(name, 0);
evictions.inc(name, 0);
let next = 0;

const rate = Number(process.env.GROW_BYTES_PER_SEC || 1024 * 1024);
const tickMs = 50;
const entryBytes = 4096; // ~512 small integers: V8 stores them as a 4 KiB-ish array
const churn = Number(process.env.CHURN_BYTES_PER_SEC || 0);
const inFlight = []; // per-request state, kept for ~1 s: promoted, then garbage
setInterval(() => {
  if (churn > 0) {
    const arrays = Math.max(1, Math.round((churn * tickMs) / 1000 / entryBytes));
    const batch = [];
    for (let i = 0; i < arrays; i++) batch.push(new Array(entryBytes / 8).fill(i));
    inFlight.push(batch);
    if (inFlight.length > 1000 / tickMs) inFlight.shift();
  }
  const entries = Math.max(1, Math.round((rate * tickMs) / 1000 / entryBytes));
  for (let i = 0; i < entries; i++) {
    // A fresh array per entry (padded strings would be stored compactly and grow the heap far
    // slower than asked): ~4 KiB of old-generation memory once it survives scavenges.
    cache.set(`session:${next}`, new Array(entryBytes / 8).fill(next));
    next++;
    if (maxEntries > 0 && cache.size > maxEntries) { // a Map iterates in insertion order: oldest first
      cache.delete(cache.keys().next().value);
      evictions.inc(name);
    }
  }
  for (let i = 0; i < 5; i++) {
    const key = `session:${Math.floor(Math.random() * next * 1.2)}`;
    if (cache.has(key)) hits.inc(name); else misses.inc(name);
  }
  entryCount.set(name, cache.size);
}, tickMs);

http.createServer(async (req, res) => {
  if (req.url === '/metrics') {
    res.setHeader('Content-Type', client.register.contentType);
    res.end(await client.register.metrics());
  } else {
    res.statusCode = 404;
    res.end();
  }
}).listen(Number(process.env.PORT), '127.0.0.1');
