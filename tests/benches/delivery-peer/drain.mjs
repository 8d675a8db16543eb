// The delivery bench's peer row (issue 18): BullMQ, a Redis-backed job
// queue with retries and backoff, draining a backlog of the bench's
// messages into memcached through memjs. Redis is the one the Rust bench
// starts: its own data dir, `appendonly yes`, `appendfsync always`, so a
// job's state changes are fsynced as Wharf's log and watermark are.
//
//   node drain.mjs --redis PORT --memcached PORT --messages N --payload BYTES
//                  --partitions P --concurrency C
//
// One queue per partition (key i goes to queue i % P) and one worker per
// queue. Concurrency 1 keeps each queue's jobs in order, which is the
// guarantee Wharf gives per key; a larger concurrency lets jobs of one
// queue overtake each other. The load (addBulk, 1,000 jobs a call) is not
// timed; the clock runs from starting the workers until every job has
// completed. Prints one JSON line: {"load_ms":…,"drain_ms":…,"completed":…}.
import { Queue, Worker } from 'bullmq';
import memjs from 'memjs';

function args() {
  const a = { redis: 0, memcached: 0, messages: 100000, payload: 100, partitions: 4, concurrency: 1 };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in a)) throw new Error(`unknown option ${argv[i]}`);
    a[k] = Number(argv[i + 1]);
  }
  if (!a.redis || !a.memcached) throw new Error('--redis PORT and --memcached PORT are required');
  return a;
}

// The Rust bench's key_of and payload_of, byte for byte.
const keyOf = (i) => `bench-${String(i).padStart(8, '0')}`;
function payloadOf(i, len) {
  let p = `${String(i).padStart(8, '0')}:`;
  for (let j = 0; p.length < len; j++) p += String.fromCharCode(97 + ((i + j) % 26));
  return p.slice(0, len);
}

const a = args();
const connection = { host: '127.0.0.1', port: a.redis, maxRetriesPerRequest: null };
const names = Array.from({ length: a.partitions }, (_, p) => `bench-${p}`);
const queues = names.map((n) => new Queue(n, { connection }));
const jobOpts = { removeOnComplete: true, attempts: 10, backoff: { type: 'exponential', delay: 50 } };

const loadStart = Date.now();
for (let p = 0; p < a.partitions; p++) {
  let chunk = [];
  for (let i = p; i < a.messages; i += a.partitions) {
    chunk.push({ name: 'set', data: { key: keyOf(i), payload: payloadOf(i, a.payload) }, opts: jobOpts });
    if (chunk.length === 1000) { await queues[p].addBulk(chunk); chunk = []; }
  }
  if (chunk.length) await queues[p].addBulk(chunk);
}
const loadMs = Date.now() - loadStart;

// One memcached client per worker, as the host has one plugin instance per lane.
const clients = names.map(() => memjs.Client.create(`127.0.0.1:${a.memcached}`, { retries: 0, logger: { log() {} } }));
let completed = 0;
let failed = 0;
const drainStart = process.hrtime.bigint();
const done = new Promise((resolve) => {
  const workers = names.map((n, p) => {
    const w = new Worker(n, async (job) => {
      await clients[p].set(job.data.key, job.data.payload, { expires: 0 });
    }, { connection, concurrency: a.concurrency });
    w.on('completed', () => { if (++completed === a.messages) resolve(workers); });
    w.on('failed', () => { failed++; });
    return w;
  });
});
const workers = await done;
const drainMs = Number(process.hrtime.bigint() - drainStart) / 1e6;
await Promise.all(workers.map((w) => w.close()));
await Promise.all(queues.map((q) => q.close()));
clients.forEach((c) => c.close());
console.log(JSON.stringify({ load_ms: loadMs, drain_ms: drainMs, completed, failed_attempts: failed }));
