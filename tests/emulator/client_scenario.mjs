// What the two client scenario scripts share (js/run.mjs with the gRPC client, js-rest/run.mjs with
// the REST client): arguments, starting and stopping the emulator, the deterministic data, the
// canonical JSON form of the answers, expectations, and the output. Each script brings its own
// official Qdrant client and its own calls. Imports no npm package. Uses only Node 18 APIs.
//
//   const args = parseArgs(process.argv.slice(2), 'target', 'HOST:PORT');
//   runScenario({ args, target: args.target, emulatorFlags: [], emulatorPort: 'grpc',
//                 targetOf: (address) => address, errorAnswer: (e) => ({ message: e.message }),
//                 scenario: async ({ target, answers, expect, error }) => { ... } });
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

// `--name value` pairs; exactly one of `--<targetFlag> <targetUsage>` and `--emulator PATH`.
export function parseArgs(argv, targetFlag, targetUsage) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) throw new Error(`bad argument ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  if (!args[targetFlag] === !args.emulator) {
    throw new Error(`give exactly one of --${targetFlag} ${targetUsage}, --emulator PATH`);
  }
  return args;
}

// Starts the emulator on free ports with `flags` more; resolves with { child, address } (the
// HOST:PORT labelled `port` in its listening line) once it printed its ports.
function startEmulator(path, flags, port) {
  const child = spawn(path, ['--listen', '127.0.0.1:0', '--control-listen', '127.0.0.1:0', ...flags], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const pattern = new RegExp(`(?:^| )${port}=(\\S+)`);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('emulator did not report its ports in 10 s')), 10_000);
    child.on('exit', (code) => reject(new Error(`emulator exited with ${code}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const match = pattern.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve({ child, address: match[1] });
      }
    });
  });
}

// Deterministic pseudo-random numbers (mulberry32).
export function random(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The UUID of point i (every tenth point has one).
export function uuidFor(i) {
  const hex = (0x10000000 + i).toString(16).padStart(12, '0');
  return `6f1c2a3b-0000-4000-8000-${hex}`;
}

// Canonical form: object keys sorted; timings (`time`, `usage`) and protobuf-es metadata dropped;
// bigints as strings, bytes as base64, floats to 6 significant digits.
export function canonical(value) {
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') return Number.isInteger(value) ? value : Number(value.toPrecision(6));
  if (Array.isArray(value)) return value.map(canonical);
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  if (value && typeof value === 'object') {
    const out = {};
    for (const key of Object.keys(value).sort()) {
      if (key === '$typeName' || key === '$unknown' || key === 'time' || key === 'usage') continue;
      out[key] = canonical(value[key]);
    }
    return out;
  }
  return value;
}

// Runs `scenario` against `target`, or against an emulator it starts (with `emulatorFlags`; the
// target is then `targetOf(address of emulatorPort)`) and stops. The scenario records answers in
// `answers`, checks with `expect(condition, what)`, and records an expected error as `answers[name]
// = errorAnswer(e)` with `await error(name, call)`. Afterwards the client's version check must not
// have warned. Prints the canonical answers (or writes them to --out); exits 1 when an expectation
// failed.
export async function runScenario({ args, target, emulatorFlags, emulatorPort, targetOf, errorAnswer, scenario }) {
  let emulator = null;
  if (args.emulator) {
    emulator = await startEmulator(args.emulator, emulatorFlags, emulatorPort);
    target = targetOf(emulator.address);
  }
  const failures = [];
  const expect = (condition, what) => { if (!condition) failures.push(what); };
  const warnings = [];
  const warn = console.warn;
  console.warn = (...parts) => { warnings.push(parts.join(' ')); warn(...parts); };
  const answers = {};
  const error = async (name, call) => {
    try {
      await call();
      failures.push(`${name}: expected an error`);
    } catch (e) {
      answers[name] = errorAnswer(e);
    }
  };
  try {
    await scenario({ target, answers, expect, error });
    expect(!warnings.some((w) => /incompatible|Failed to obtain server version/.test(w)),
           'client version check passes');
  } catch (e) {
    failures.push(`unexpected error: ${e.stack ?? e}${e.data ? ' ' + JSON.stringify(e.data) : ''}`);
  } finally {
    console.warn = warn;
    if (emulator) {
      const exited = new Promise((resolve) => emulator.child.once('exit', resolve));
      emulator.child.kill('SIGTERM');
      await exited;
    }
  }
  const text = JSON.stringify(canonical(answers), null, 1) + '\n';
  if (args.out) writeFileSync(args.out, text); else process.stdout.write(text);
  if (failures.length) {
    console.error(`FAILED (${failures.length}):\n  ${failures.join('\n  ')}`);
    process.exit(1);
  }
  console.error(`ok: ${Object.keys(answers).length} answers from ${target}`);
}
