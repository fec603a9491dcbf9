// Drives the official Qdrant REST JS client (@qdrant/js-client-rest, pinned in package.json)
// through the same scenario as ../js/run.mjs (the gRPC client) and prints its answers as
// canonical JSON (sorted keys, `time` and `usage` dropped, floats to 6 significant digits), so
// that a run against qdrant-emulator and a run through qpoold can be compared byte for byte.
// Exits non-zero when an expectation fails. Uses only Node 18 APIs. The run around the calls
// (arguments, emulator, canonical form, output) is ../client_scenario.mjs's.
//
//   node run.mjs --url http://127.0.0.1:6333 [--out answers.json] [--api-key KEY]
//   node run.mjs --emulator build/dev/bin/qdrant-emulator [--out answers.json] [--api-key KEY]
//     (starts the emulator, with --api-key KEY when given, and stops it)
// With --api-key the client sends header `api-key: KEY` (over plain HTTP), and the scenario also
// checks that a client without the key is refused 401.
import { QdrantClient } from '@qdrant/js-client-rest';
import { parseArgs, random, runScenario, uuidFor } from '../client_scenario.mjs';

const DIM = 8;
const POINTS = 1000;
const COLLECTION = 'js_rest_client_test';

// Every tenth point has a UUID id, the others a number.
function idOf(i) { return i % 10 === 0 ? uuidFor(i) : i; }

function matchKeyword(key, value) { return { key, match: { value } }; }

const args = parseArgs(process.argv.slice(2), 'url', 'http://HOST:PORT');
const apiKeyFlags = args['api-key'] ? ['--api-key', args['api-key']] : [];
runScenario({
  args,
  target: args.url,
  emulatorFlags: ['--rest-listen', '127.0.0.1:0', ...apiKeyFlags],
  emulatorPort: 'rest',
  targetOf: (address) => `http://${address}`,
  errorAnswer: (e) => ({ status: e.status, error: e.data?.status?.error ?? String(e) }),
  async scenario({ target, answers, expect, error }) {
    // The constructor checks the server's version with GET / (checkCompatibility defaults on).
    const auth = args['api-key'] ? { apiKey: args['api-key'], https: false } : {};
    const client = new QdrantClient({ url: target, timeout: 30_000, checkCompatibility: true, ...auth });

    answers.version = await client.versionInfo();
    delete answers.version.commit;  // Differs between servers by design; the version must match.
    expect(/^1\.\d+\.\d+/.test(answers.version.version), 'GET / reports a 1.x version');

    await client.deleteCollection(COLLECTION);
    answers.create = await client.createCollection(COLLECTION, { vectors: { size: DIM, distance: 'Cosine' } });
    expect(answers.create === true, 'create collection');
    answers.exists = await client.collectionExists(COLLECTION);
    expect(answers.exists.exists === true, 'collection exists');

    const rand = random(42);
    const points = [];
    for (let i = 1; i <= POINTS; i++) {
      const vector = Array.from({ length: DIM }, () => rand() * 2 - 1);
      points.push({ id: idOf(i), vector, payload: { group: `g${i % 5}`, n: i, parity: i % 2 ? 'odd' : 'even' } });
    }
    answers.upsert = await client.upsert(COLLECTION, { wait: true, points });
    expect(answers.upsert.status === 'completed', 'upsert status completed');

    const query = Array.from({ length: DIM }, (_, k) => (k % 2 ? 0.5 : -0.25));
    answers.search = await client.search(COLLECTION, { vector: query, limit: 10, with_payload: true });
    expect(answers.search.length === 10, 'search returns limit points');
    const scores = answers.search.map((p) => p.score);
    expect(scores.every((s, i) => i === 0 || scores[i - 1] >= s), 'search scores descend');
    expect(answers.search.every((p) => typeof p.payload.group === 'string'), 'search returns payloads');
    answers.searchThreshold = await client.search(COLLECTION, {
      vector: query, limit: 1000, score_threshold: 0.8, with_payload: false,
    });
    expect(answers.searchThreshold.every((p) => p.score >= 0.8 && p.payload === undefined),
           'score_threshold honoured, no payload when not asked');

    answers.query = await client.query(COLLECTION, {
      query, filter: { must: [matchKeyword('group', 'g3')] }, limit: 5, with_payload: true,
    });
    expect(answers.query.points.length === 5, 'query returns 5 points');
    expect(answers.query.points.every((p) => p.payload.group === 'g3'), 'query filter honoured');
    answers.queryById = await client.query(COLLECTION, { query: idOf(7), limit: 3 });
    expect(answers.queryById.points.length === 3 && answers.queryById.points.every((p) => p.id !== 7),
           'query by id excludes the point itself');

    answers.countAll = await client.count(COLLECTION, { exact: true });
    expect(answers.countAll.count === POINTS, 'count after upsert');
    answers.countOdd = await client.count(COLLECTION, { exact: true, filter: { must: [matchKeyword('parity', 'odd')] } });
    expect(answers.countOdd.count === POINTS / 2, 'count with filter');
    answers.countRange = await client.count(COLLECTION, { filter: { must: [{ key: 'n', range: { gt: 100, lte: 200 } }] } });
    expect(answers.countRange.count === 100, 'count with range');

    answers.get = await client.retrieve(COLLECTION, { ids: [idOf(1), idOf(10), idOf(5000)], with_payload: true, with_vector: true });
    expect(answers.get.length === 2, 'retrieve returns existing points only');
    expect(answers.get.every((p) => Array.isArray(p.vector) && p.vector.length === DIM), 'retrieve with_vector');
    answers.scroll = await client.scroll(COLLECTION, { limit: 5, with_payload: true });
    expect(answers.scroll.points.length === 5 && answers.scroll.next_page_offset === 6, 'scroll page and offset');
    // Every point once, numeric ids first, by paging through.
    let seen = 0, offset, pages = 0;
    do {
      const page = await client.scroll(COLLECTION, { limit: 128, offset, with_payload: false });
      seen += page.points.length;
      offset = page.next_page_offset ?? undefined;
      pages++;
    } while (offset !== undefined && pages < 100);
    answers.scrollAll = { seen, pages };
    expect(seen === POINTS, 'scroll pages cover every point once');

    const doomed = [11, 12, 13, 20, 30].map(idOf);
    answers.deleteIds = await client.delete(COLLECTION, { wait: true, points: doomed });
    answers.countAfterDeleteIds = await client.count(COLLECTION);
    expect(answers.countAfterDeleteIds.count === POINTS - 5, 'count after delete by ids');
    answers.deleteFilter = await client.delete(COLLECTION, { wait: true, filter: { must: [{ key: 'n', match: { value: 100 } }] } });
    answers.deleteGroup = await client.delete(COLLECTION, { wait: true, filter: { must: [matchKeyword('group', 'g1')] } });
    answers.countAfterDeleteFilter = await client.count(COLLECTION);
    // g1 = i % 5 == 1: 200 points, of which 11 was already deleted; n == 100 is one more point.
    expect(answers.countAfterDeleteFilter.count === POINTS - 5 - 1 - 199, 'count after delete by filter');
    answers.info = await client.getCollection(COLLECTION);
    expect(answers.info.points_count === POINTS - 5 - 1 - 199 && answers.info.config.params.vectors.size === DIM,
           'collection info');
    answers.list = await client.getCollections();
    expect(answers.list.collections.some((c) => c.name === COLLECTION), 'list names the collection');

    await error('errorCreateExisting', () => client.createCollection(COLLECTION, { vectors: { size: DIM, distance: 'Cosine' } }));
    expect(answers.errorCreateExisting?.status === 409, 'create existing: 409');
    await error('errorMissingCollection', () => client.search('no_such_collection', { vector: query, limit: 1 }));
    expect(answers.errorMissingCollection?.status === 404, 'missing collection: 404');
    await error('errorWrongDimension', () => client.search(COLLECTION, { vector: [1, 2, 3], limit: 1 }));
    expect(answers.errorWrongDimension?.status === 400, 'wrong dimension: 400');
    await error('errorLimitZero', () => client.query(COLLECTION, { query, limit: 0 }));
    expect(answers.errorLimitZero?.status === 422, 'limit 0: 422');

    if (args['api-key']) {
      const keyless = new QdrantClient({ url: target, timeout: 30_000, checkCompatibility: false });
      await error('errorNoApiKey', () => keyless.getCollections());
      expect(answers.errorNoApiKey?.status === 401, 'no api key: 401');
    }

    answers.deleteCollection = await client.deleteCollection(COLLECTION);
    expect(answers.deleteCollection === true, 'delete collection');
    answers.existsAfterDelete = await client.collectionExists(COLLECTION);
    expect(answers.existsAfterDelete.exists === false, 'collection gone');
    // The constructor's version check runs in the background; it has long finished by now (every
    // call above went over the same keep-alive pool after it), but judge only after one more turn.
    await new Promise((resolve) => setImmediate(resolve));
    // (runScenario then checks the warnings. With an api key the client also warns that it goes
    // over plain HTTP; that one is expected.)
  },
}).catch((e) => { console.error(e); process.exit(1); });
