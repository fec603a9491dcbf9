// Riding out a node restart with the official Qdrant REST JS client (@qdrant/js-client-rest): N
// clients read in a loop for a while, each request bounded by the client's own timeout (it aborts
// the request; no ?timeout= goes to the server). Prints one line per second ("progress calls=N
// failed=M") and a summary; exits 1 when any request failed. The caller restarts the node
// meanwhile (tests/e2e/js_client_restart_through_qpoold.sh).
//
//   node restart.mjs --url http://127.0.0.1:6333 --clients 10 --seconds 8 --timeout-ms 5000
import { QdrantClient } from '@qdrant/js-client-rest';

function parseArgs(argv) {
  const args = { clients: '10', seconds: '8', 'timeout-ms': '5000' };
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) throw new Error(`bad argument ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  if (!args.url) throw new Error('--url http://HOST:PORT is required');
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const timeout = Number(args['timeout-ms']);
  const end = Date.now() + Number(args.seconds) * 1000;
  let calls = 0;
  const failures = [];
  const progress = setInterval(() => console.log(`progress calls=${calls} failed=${failures.length}`), 1000);
  const worker = async () => {
    const client = new QdrantClient({ url: args.url, timeout, checkCompatibility: false });
    while (Date.now() < end) {
      const started = Date.now();
      try {
        await client.getCollections();
      } catch (error) {
        failures.push(`after ${Date.now() - started} ms: ${error?.message ?? error}${error?.data ? ` ${JSON.stringify(error.data)}` : ""}`);
      }
      calls++;
    }
  };
  await Promise.all(Array.from({ length: Number(args.clients) }, worker));
  clearInterval(progress);
  console.log(`done calls=${calls} failed=${failures.length}`);
  for (const failure of failures.slice(0, 5)) console.log(`failure: ${failure}`);
  process.exit(failures.length === 0 && calls > 0 ? 0 : 1);
}

main().catch((error) => {
  console.error(error);
  process.exit(2);
});
