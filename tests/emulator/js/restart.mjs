// Riding out a node restart with the official Qdrant gRPC JS client (@qdrant/js-client-grpc): N
// clients read in a loop for a while, each call bounded by the client's own timeout, which aborts
// the call on the client side and sends no grpc-timeout (so qpoold sees calls without a deadline).
// The loop and its output are ../restart_loop.mjs's. The caller restarts the node meanwhile
// (tests/e2e/js_client_restart_through_qpoold.sh).
//
//   node restart.mjs --target 127.0.0.1:6334 --clients 10 --seconds 8 --timeout-ms 5000
import { QdrantClient } from '@qdrant/js-client-grpc';
import { parseArgs, runRestartLoop } from '../restart_loop.mjs';

const args = parseArgs(process.argv.slice(2), 'target');
const [host, port] = args.target.split(':');
runRestartLoop(args, (timeout) => {
  const collections = new QdrantClient({ host, port: Number(port), timeout }).api('collections');
  return () => collections.list({});
});
