// The read loop both restart scripts share (js/restart.mjs over gRPC, js-rest/restart.mjs over
// REST): N clients call in a loop for a while, each call bounded by the client's own timeout.
// Prints one line per second ("progress calls=N failed=M") and a summary; exits 1 when any call
// failed (or none was made), 2 on a setup error. Imports no npm package: each caller brings its
// own official Qdrant client.

// `--name value` pairs over the defaults (10 clients, 8 s, 5,000 ms timeout). A bad argument, or
// no `--required`, is a setup error: says so and exits 2.
export function parseArgs(argv, required) {
  const args = { clients: '10', seconds: '8', 'timeout-ms': '5000' };
  const fail = (message) => {
    console.error(message);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) fail(`bad argument ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  if (!args[required]) fail(`--${required} is required`);
  return args;
}

// Runs the loop. `newCall(timeoutMs)` makes one client and returns the function that makes one
// call with it. `describe(error)` says what a failed call reports.
export function runRestartLoop(args, newCall, describe = (error) => error?.message ?? error) {
  const timeout = Number(args['timeout-ms']);
  const end = Date.now() + Number(args.seconds) * 1000;
  let calls = 0;
  const failures = [];
  const worker = async () => {
    const call = newCall(timeout);
    while (Date.now() < end) {
      const started = Date.now();
      try {
        await call();
      } catch (error) {
        failures.push(`after ${Date.now() - started} ms: ${describe(error)}`);
      }
      calls++;
    }
  };
  const main = async () => {
    const progress = setInterval(() => console.log(`progress calls=${calls} failed=${failures.length}`), 1000);
    await Promise.all(Array.from({ length: Number(args.clients) }, worker));
    clearInterval(progress);
    console.log(`done calls=${calls} failed=${failures.length}`);
    for (const failure of failures.slice(0, 5)) console.log(`failure: ${failure}`);
    process.exit(failures.length === 0 && calls > 0 ? 0 : 1);
  };
  main().catch((error) => {
    console.error(error);
    process.exit(2);
  });
}
