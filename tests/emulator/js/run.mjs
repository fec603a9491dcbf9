// Drives the official Qdrant gRPC JS client (@qdrant/js-client-grpc, pinned in package.json)
// through a fixed scenario and prints its answers as canonical JSON (sorted keys, `time` fields
// dropped, scores rounded), so that a run against qdrant-emulator and a run through qpoold can be
// compared byte for byte. Exits non-zero when an expectation fails. The run around the calls
// (arguments, emulator, canonical form, output) is ../client_scenario.mjs's.
//
//   node run.mjs --target 127.0.0.1:6334 [--out answers.json]
//   node run.mjs --emulator build/bin/qdrant-emulator [--out answers.json]   (starts and stops it)
import { ConnectError, Distance, QdrantClient } from '@qdrant/js-client-grpc';
import { parseArgs, random, runScenario, uuidFor } from '../client_scenario.mjs';

const DIM = 8;
const POINTS = 1000;
const COLLECTION = 'js_client_test';

function idOf(i) {
  return i % 10 === 0 ? { pointIdOptions: { case: 'uuid', value: uuidFor(i) } }
                      : { pointIdOptions: { case: 'num', value: BigInt(i) } };
}

function keyword(value) { return { kind: { case: 'stringValue', value } }; }
function integer(value) { return { kind: { case: 'integerValue', value: BigInt(value) } }; }
function matchKeyword(key, value) {
  return { conditionOneOf: { case: 'field', value: { key, match: { matchValue: { case: 'keyword', value } } } } };
}
function matchInteger(key, value) {
  return { conditionOneOf: { case: 'field', value: { key, match: { matchValue: { case: 'integer', value: BigInt(value) } } } } };
}
const withPayload = { selectorOptions: { case: 'enable', value: true } };

const args = parseArgs(process.argv.slice(2), 'target', 'HOST:PORT');
runScenario({
  args,
  target: args.target,
  emulatorFlags: [],
  emulatorPort: 'grpc',
  targetOf: (address) => address,
  errorAnswer: (e) => {
    const ce = ConnectError.from(e);
    return { code: ce.code, message: ce.rawMessage };
  },
  async scenario({ target, answers, expect, error }) {
    const [host, port] = target.split(':');
    const client = new QdrantClient({ host, port: Number(port), timeout: 30_000 });
    const collections = client.api('collections');
    const points = client.api('points');

    answers.health = await client.api('service').healthCheck({});
    delete answers.health.commit;  // Differs between servers by design; version must match.
    await collections.delete({ collectionName: COLLECTION });
    answers.create = await collections.create({
      collectionName: COLLECTION,
      vectorsConfig: { config: { case: 'params', value: { size: BigInt(DIM), distance: Distance.Cosine } } },
    });
    answers.exists = await collections.collectionExists({ collectionName: COLLECTION });

    const rand = random(42);
    const batch = [];
    for (let i = 1; i <= POINTS; i++) {
      const vector = Array.from({ length: DIM }, () => rand() * 2 - 1);
      batch.push({
        id: idOf(i),
        vectors: { vectorsOptions: { case: 'vector', value: { vector: { case: 'dense', value: { data: vector } } } } },
        payload: { group: keyword(`g${i % 5}`), n: integer(i), parity: keyword(i % 2 ? 'odd' : 'even') },
      });
    }
    // One request of ~100 KiB: the client gzips it (it compresses messages of 1 KiB or more).
    answers.upsert = await points.upsert({ collectionName: COLLECTION, wait: true, points: batch });
    expect(answers.upsert.result?.status === 2, 'upsert status Completed');

    const query = Array.from({ length: DIM }, (_, k) => (k % 2 ? 0.5 : -0.25));
    answers.search = await points.search({
      collectionName: COLLECTION, vector: query, limit: 10n, withPayload,
    });
    expect(answers.search.result.length === 10, 'search returns limit points');
    const scores = answers.search.result.map((p) => p.score);
    expect(scores.every((s, i) => i === 0 || scores[i - 1] >= s), 'search scores descend');
    answers.searchThreshold = await points.search({
      collectionName: COLLECTION, vector: query, limit: 1000n, scoreThreshold: 0.8,
    });
    expect(answers.searchThreshold.result.every((p) => p.score >= 0.8), 'score_threshold honoured');

    answers.query = await points.query({
      collectionName: COLLECTION,
      query: { variant: { case: 'nearest', value: { variant: { case: 'dense', value: { data: query } } } } },
      filter: { must: [matchKeyword('group', 'g3')] },
      limit: 5n, withPayload,
    });
    expect(answers.query.result.length === 5, 'query returns 5 points');
    expect(answers.query.result.every((p) => p.payload.group.kind.value === 'g3'), 'query filter honoured');
    answers.queryById = await points.query({
      collectionName: COLLECTION,
      query: { variant: { case: 'nearest', value: { variant: { case: 'id', value: idOf(7) } } } },
      limit: 3n,
    });

    answers.countAll = await points.count({ collectionName: COLLECTION, exact: true });
    expect(answers.countAll.result.count === BigInt(POINTS), 'count after upsert');
    answers.countOdd = await points.count({
      collectionName: COLLECTION, exact: true, filter: { must: [matchKeyword('parity', 'odd')] },
    });
    expect(answers.countOdd.result.count === BigInt(POINTS / 2), 'count with filter');
    answers.get = await points.get({ collectionName: COLLECTION, ids: [idOf(1), idOf(10), idOf(5000)], withPayload });
    expect(answers.get.result.length === 2, 'get returns existing points only');
    answers.scroll = await points.scroll({ collectionName: COLLECTION, limit: 5, withPayload });
    expect(answers.scroll.result.length === 5 && answers.scroll.nextPageOffset, 'scroll page and offset');

    const doomed = [11, 12, 13, 20, 30].map(idOf);
    answers.deleteIds = await points.delete({
      collectionName: COLLECTION, wait: true,
      points: { pointsSelectorOneOf: { case: 'points', value: { ids: doomed } } },
    });
    answers.countAfterDeleteIds = await points.count({ collectionName: COLLECTION, exact: true });
    expect(answers.countAfterDeleteIds.result.count === BigInt(POINTS - 5), 'count after delete by ids');
    answers.deleteFilter = await points.delete({
      collectionName: COLLECTION, wait: true,
      points: { pointsSelectorOneOf: { case: 'filter', value: { must: [matchInteger('n', 100)] } } },
    });
    answers.deleteGroup = await points.delete({
      collectionName: COLLECTION, wait: true,
      points: { pointsSelectorOneOf: { case: 'filter', value: { must: [matchKeyword('group', 'g1')] } } },
    });
    answers.countAfterDeleteFilter = await points.count({ collectionName: COLLECTION, exact: true });
    // g1 = i % 5 == 1: 200 points, of which 11 was already deleted; n == 100 is one more point.
    expect(answers.countAfterDeleteFilter.result.count === BigInt(POINTS - 5 - 1 - 199),
           'count after delete by filter');
    answers.info = await collections.get({ collectionName: COLLECTION });
    answers.list = await collections.list({});
    expect(answers.list.collections.some((c) => c.name === COLLECTION), 'list names the collection');

    await error('errorCreateExisting', () => collections.create({
      collectionName: COLLECTION,
      vectorsConfig: { config: { case: 'params', value: { size: BigInt(DIM), distance: Distance.Cosine } } },
    }));
    expect(answers.errorCreateExisting?.code === 6, 'create existing: ALREADY_EXISTS');
    await error('errorMissingCollection', () => points.search({ collectionName: 'no_such_collection', vector: query, limit: 1n }));
    expect(answers.errorMissingCollection?.code === 5, 'missing collection: NOT_FOUND');
    await error('errorWrongDimension', () => points.search({ collectionName: COLLECTION, vector: [1, 2, 3], limit: 1n }));
    expect(answers.errorWrongDimension?.code === 3, 'wrong dimension: INVALID_ARGUMENT');

    answers.deleteCollection = await collections.delete({ collectionName: COLLECTION });
    expect(answers.deleteCollection.result === true, 'delete collection');
    // The constructor's version check runs in the background; let it settle before judging.
    await new Promise((resolve) => setTimeout(resolve, 100));
  },
}).catch((e) => { console.error(e); process.exit(1); });
