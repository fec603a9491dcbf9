// Riding out a node restart with the official Qdrant REST JS client (@qdrant/js-client-rest): N
// clients read in a loop for a while, each request bounded by the client's own timeout (it aborts
// the request; no ?timeout= goes to the server). The loop and its output are
// ../restart_loop.mjs's; a failure also shows the body qpoold answered. The caller restarts the
// node meanwhile (tests/e2e/js_client_restart_through_qpoold.sh).
//
//   node restart.mjs --url http://127.0.0.1:6333 --clients 10 --seconds 8 --timeout-ms 5000
import { QdrantClient } from '@qdrant/js-client-rest';
import { parseArgs, runRestartLoop } from '../restart_loop.mjs';

const args = parseArgs(process.argv.slice(2), 'url');
runRestartLoop(
  args,
  (timeout) => {
    const client = new QdrantClient({ url: args.url, timeout, checkCompatibility: false });
    return () => client.getCollections();
  },
  (error) => `${error?.message ?? error}${error?.data ? ` ${JSON.stringify(error.data)}` : ''}`,
);
