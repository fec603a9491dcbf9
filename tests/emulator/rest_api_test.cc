// qdrant-emulator's REST API mapping (RestApi) over the in-memory store, without sockets: routes,
// Qdrant's REST JSON shapes and status codes, and that REST and the gRPC handlers share one store.
#include "emulator/rest_api.h"

#include <string>

#include "emulator/handlers.h"
#include "emulator/rest_json.h"
#include "emulator/storage.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qpool::emulator {
namespace {

using ::testing::HasSubstr;

struct Answer {
  int status = 0;
  Json body;
  std::string method;
  std::string write_collection;
};

class RestApiTest : public testing::Test {
 protected:
  Answer Call(const std::string& method, const std::string& target, const std::string& body = "") {
    std::optional<RestCall> call = api_.Resolve(method, target, body);
    Answer answer;
    if (!call.has_value()) {
      answer.status = -1;
      return answer;
    }
    answer.method = call->method;
    answer.write_collection = call->write_collection;
    RestReply reply = call->run();
    answer.status = reply.status;
    if (reply.content_type == "application/json") {
      answer.body = Json::parse(reply.body);
    } else {
      answer.body = reply.body;
    }
    return answer;
  }

  // A collection "docs" of 4-dimensional Dot vectors holding points 1..5 and one UUID point.
  void CreateDocs() {
    ASSERT_EQ(Call("PUT", "/collections/docs", R"({"vectors":{"size":4,"distance":"Dot"}})").status,
              200);
    Answer upsert = Call("PUT", "/collections/docs/points?wait=true", R"({"points":[
      {"id":1,"vector":[1,0,0,0],"payload":{"color":"red","n":1}},
      {"id":2,"vector":[0,1,0,0],"payload":{"color":"blue","n":2}},
      {"id":3,"vector":[0,0,1,0],"payload":{"color":"red","n":3,"price":2.5}},
      {"id":4,"vector":[0,0,0,1],"payload":{"color":"green","n":4}},
      {"id":5,"vector":[0.5,0.5,0,0],"payload":{"color":"red","n":5,"tags":["a","b"]}},
      {"id":"6F1C2A3B-0000-4000-8000-000000000001","vector":[0.1,0.1,0.1,0.1],"payload":{}}]})");
    ASSERT_EQ(upsert.status, 200) << upsert.body;
  }

  Storage storage_;
  Handlers handlers_{storage_, HandlerOptions{}};
  RestApi api_{handlers_};
};

TEST_F(RestApiTest, RootIsTheVersionDocumentTheClientsCheck) {
  Answer root = Call("GET", "/");
  EXPECT_EQ(root.status, 200);
  EXPECT_EQ(root.body["title"], "qdrant - vector search engine");
  EXPECT_EQ(root.body["version"], HandlerOptions{}.version);
  EXPECT_EQ(root.body["commit"], "qdrant-emulator");
  EXPECT_EQ(root.method, "qdrant.Qdrant/HealthCheck");
}

TEST_F(RestApiTest, ProbesAnswerPlainText) {
  for (const char* probe : {"healthz", "livez", "readyz"}) {
    Answer answer = Call("GET", std::string("/") + probe);
    EXPECT_EQ(answer.status, 200) << probe;
    EXPECT_EQ(answer.method, std::string("rest.Probe/") + probe);
  }
  EXPECT_EQ(Call("GET", "/healthz").body, "healthz check passed");
}

TEST_F(RestApiTest, UnknownRoutesDoNotResolve) {
  EXPECT_EQ(Call("GET", "/telemetry").status, -1);
  EXPECT_EQ(Call("POST", "/collections/docs/points/recommend", "{}").status, -1);
  EXPECT_EQ(Call("PATCH", "/collections/docs", "{}").status, -1);
  RestReply reply = RestApi::NoRoute("GET", "/telemetry?x=1");
  EXPECT_EQ(reply.status, 404);
  EXPECT_EQ(Json::parse(reply.body)["status"]["error"], "Not found: no route GET /telemetry");
}

TEST_F(RestApiTest, RoutesCountAsTheirGrpcMethod) {
  CreateDocs();
  EXPECT_EQ(Call("POST", "/collections/docs/points/delete", R"({"points":[1]})").method,
            "qdrant.Points/Delete");
  EXPECT_EQ(Call("POST", "/collections/docs/points/delete", R"({"points":[1]})").write_collection,
            "docs");
  EXPECT_EQ(Call("PUT", "/collections/docs/points", R"({"points":[]})").method,
            "qdrant.Points/Upsert");
  EXPECT_EQ(Call("POST", "/collections/docs/points", R"({"ids":[]})").method, "qdrant.Points/Get");
  EXPECT_EQ(Call("GET", "/collections/docs/points/2").method, "qdrant.Points/Get");
  EXPECT_EQ(Call("POST", "/collections/docs/points/count", "{}").method, "qdrant.Points/Count");
  EXPECT_EQ(Call("POST", "/collections/docs/points/scroll", "{}").method, "qdrant.Points/Scroll");
  EXPECT_EQ(Call("POST", "/collections/docs/points/query", "{}").method, "qdrant.Points/Query");
  Answer search =
      Call("POST", "/collections/docs/points/search", R"({"vector":[1,0,0,0],"limit":1})");
  EXPECT_EQ(search.method, "qdrant.Points/Search");
  EXPECT_TRUE(search.write_collection.empty());
  EXPECT_EQ(Call("GET", "/collections").method, "qdrant.Collections/List");
  EXPECT_EQ(Call("GET", "/collections/docs").method, "qdrant.Collections/Get");
  EXPECT_EQ(Call("GET", "/collections/docs/exists").method, "qdrant.Collections/CollectionExists");
  Answer drop = Call("DELETE", "/collections/docs");
  EXPECT_EQ(drop.method, "qdrant.Collections/Delete");
  EXPECT_EQ(drop.write_collection, "docs");
}

TEST_F(RestApiTest, CollectionCreatedOverRestIsVisibleToTheGrpcHandlersAndBack) {
  ASSERT_EQ(
      Call("PUT", "/collections/rest_made", R"({"vectors":{"size":3,"distance":"Cosine"}})").status,
      200);
  qdrant::CollectionExistsRequest exists;
  exists.set_collection_name("rest_made");
  qdrant::CollectionExistsResponse exists_reply;
  ASSERT_TRUE(handlers_.CollectionExists(exists, &exists_reply).ok());
  EXPECT_TRUE(exists_reply.result().exists());

  qdrant::CreateCollection create;
  create.set_collection_name("grpc_made");
  create.mutable_vectors_config()->mutable_params()->set_size(2);
  create.mutable_vectors_config()->mutable_params()->set_distance(qdrant::Euclid);
  qdrant::CollectionOperationResponse create_reply;
  ASSERT_TRUE(handlers_.CreateCollection(create, &create_reply).ok());
  Answer list = Call("GET", "/collections");
  EXPECT_EQ(list.body["result"]["collections"],
            Json::parse(R"([{"name":"grpc_made"},{"name":"rest_made"}])"));
  Answer info = Call("GET", "/collections/grpc_made");
  EXPECT_EQ(info.body["result"]["config"]["params"]["vectors"],
            Json::parse(R"({"size":2,"distance":"Euclid"})"));
  EXPECT_EQ(info.body["status"], "ok");
  EXPECT_TRUE(info.body["time"].is_number());
}

TEST_F(RestApiTest, CollectionErrorsHaveQdrantsCodesAndShape) {
  CreateDocs();
  Answer again = Call("PUT", "/collections/docs", R"({"vectors":{"size":4,"distance":"Dot"}})");
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(again.body["status"]["error"], "Wrong input: Collection `docs` already exists!");
  EXPECT_TRUE(again.body["time"].is_number());
  EXPECT_FALSE(again.body.contains("result"));
  Answer missing = Call("GET", "/collections/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body["status"]["error"], "Not found: Collection `nope` doesn't exist!");
  EXPECT_EQ(Call("POST", "/collections/nope/points/count", "{}").status, 404);
  EXPECT_EQ(Call("GET", "/collections/nope/exists").body["result"]["exists"], false);
  EXPECT_EQ(Call("DELETE", "/collections/nope").body["result"], false);
  Answer bad_distance =
      Call("PUT", "/collections/x", R"({"vectors":{"size":4,"distance":"Hamming"}})");
  EXPECT_EQ(bad_distance.status, 400);
  EXPECT_THAT(bad_distance.body["status"]["error"].get<std::string>(),
              HasSubstr("Format error in JSON body"));
  // The store serves one unnamed vector: named vectors are refused, saying so.
  Answer named = Call("PUT", "/collections/x", R"({"vectors":{"a":{"size":4,"distance":"Dot"}}})");
  EXPECT_EQ(named.status, 400);
  EXPECT_THAT(named.body["status"]["error"].get<std::string>(), HasSubstr("one unnamed"));
}

TEST_F(RestApiTest, UpsertWaitDecidesCompletedOrAcknowledged) {
  CreateDocs();
  Answer waited = Call("PUT", "/collections/docs/points?wait=true",
                       R"({"points":[{"id":9,"vector":[1,1,1,1]}]})");
  EXPECT_EQ(waited.body["result"]["status"], "completed");
  EXPECT_TRUE(waited.body["result"]["operation_id"].is_number_unsigned());
  Answer not_waited =
      Call("PUT", "/collections/docs/points", R"({"points":[{"id":9,"vector":[1,1,1,1]}]})");
  EXPECT_EQ(not_waited.body["result"]["status"], "acknowledged");
  EXPECT_EQ(Call("PUT", "/collections/docs/points?wait=maybe", R"({"points":[]})").status, 400);
}

TEST_F(RestApiTest, BatchUpsertStoresEveryPoint) {
  CreateDocs();
  Answer batch = Call("PUT", "/collections/docs/points?wait=true", R"({"batch":{
      "ids":[20,21],"vectors":[[1,2,3,4],[4,3,2,1]],"payloads":[{"k":"x"},null]}})");
  ASSERT_EQ(batch.status, 200) << batch.body;
  Answer got = Call("POST", "/collections/docs/points", R"({"ids":[20,21],"with_vector":true})");
  ASSERT_EQ(got.body["result"].size(), 2u);
  EXPECT_EQ(got.body["result"][0]["payload"], Json::parse(R"({"k":"x"})"));
  EXPECT_EQ(got.body["result"][1]["vector"], Json::parse("[4.0,3.0,2.0,1.0]"));
}

TEST_F(RestApiTest, RetrieveReturnsExistingPointsWithPayloadTypesKept) {
  CreateDocs();
  Answer got = Call("POST", "/collections/docs/points",
                    R"({"ids":[3,"6f1c2a3b000040008000000000000001",404],"with_vector":true})");
  ASSERT_EQ(got.status, 200) << got.body;
  Json expected = Json::parse(R"([
    {"id":3,"payload":{"color":"red","n":3,"price":2.5},"vector":[0.0,0.0,1.0,0.0]},
    {"id":"6f1c2a3b-0000-4000-8000-000000000001","payload":{},
     "vector":[0.1,0.1,0.1,0.1]}])");
  ASSERT_EQ(got.body["result"].size(), 2u);
  EXPECT_EQ(got.body["result"][0], expected[0]);
  EXPECT_EQ(got.body["result"][1]["id"], expected[1]["id"]);
  EXPECT_TRUE(got.body["result"][0]["payload"]["n"].is_number_integer());
  Answer without = Call("POST", "/collections/docs/points", R"({"ids":[3],"with_payload":false})");
  EXPECT_FALSE(without.body["result"][0].contains("payload"));
  EXPECT_FALSE(without.body["result"][0].contains("vector"));
  Answer include =
      Call("POST", "/collections/docs/points", R"({"ids":[5],"with_payload":["tags"]})");
  EXPECT_EQ(include.body["result"][0]["payload"], Json::parse(R"({"tags":["a","b"]})"));
}

TEST_F(RestApiTest, GetPointByPathIdOr404) {
  CreateDocs();
  Answer one = Call("GET", "/collections/docs/points/2");
  EXPECT_EQ(one.status, 200);
  EXPECT_EQ(one.body["result"]["payload"]["color"], "blue");
  Answer uuid = Call("GET", "/collections/docs/points/6f1c2a3b-0000-4000-8000-000000000001");
  EXPECT_EQ(uuid.status, 200);
  Answer missing = Call("GET", "/collections/docs/points/77");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body["status"]["error"], "Not found: No point with id 77 found");
  EXPECT_EQ(Call("GET", "/collections/docs/points/not-a-uuid").status, 400);
}

TEST_F(RestApiTest, SearchRanksAndProjectsLikeQdrant) {
  CreateDocs();
  Answer search = Call("POST", "/collections/docs/points/search",
                       R"({"vector":[1,0.1,0,0],"limit":2,"with_payload":true,
                           "filter":{"must":[{"key":"color","match":{"value":"red"}}]}})");
  ASSERT_EQ(search.status, 200) << search.body;
  const Json& hits = search.body["result"];
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[0]["id"], 1);
  EXPECT_EQ(hits[1]["id"], 5);
  EXPECT_FLOAT_EQ(hits[0]["score"].get<float>(), 1.0f);
  EXPECT_EQ(hits[0]["payload"]["color"], "red");
  EXPECT_TRUE(hits[0].contains("version"));
  Answer bare =
      Call("POST", "/collections/docs/points/search", R"({"vector":[1,0,0,0],"limit":1})");
  EXPECT_FALSE(bare.body["result"][0].contains("payload"));
  Answer threshold = Call("POST", "/collections/docs/points/search",
                          R"({"vector":[1,0,0,0],"limit":10,"score_threshold":0.4})");
  EXPECT_EQ(threshold.body["result"].size(), 2u);  // 1 (1.0) and 5 (0.5).
}

TEST_F(RestApiTest, QueryNearestByVectorOrIdAndWithoutQuery) {
  CreateDocs();
  Answer by_vector = Call("POST", "/collections/docs/points/query",
                          R"({"query":[0,0,0,1],"limit":1,"with_payload":true})");
  ASSERT_EQ(by_vector.status, 200) << by_vector.body;
  EXPECT_EQ(by_vector.body["result"]["points"][0]["id"], 4);
  EXPECT_EQ(by_vector.body["result"]["points"][0]["payload"]["color"], "green");
  Answer nearest = Call("POST", "/collections/docs/points/query",
                        R"({"query":{"nearest":[0,0,0,1]},"limit":1})");
  EXPECT_EQ(nearest.body["result"]["points"][0]["id"], 4);
  Answer by_id = Call("POST", "/collections/docs/points/query", R"({"query":1,"limit":1})");
  EXPECT_EQ(by_id.body["result"]["points"][0]["id"], 5);  // 1 itself is left out.
  Answer no_query = Call("POST", "/collections/docs/points/query", R"({"limit":2})");
  EXPECT_EQ(no_query.body["result"]["points"], Json::parse(R"([{"id":1,"version":0,"score":0.0},
                                                              {"id":2,"version":0,"score":0.0}])"));
  Answer recommend =
      Call("POST", "/collections/docs/points/query", R"({"query":{"recommend":{"positive":[1]}}})");
  EXPECT_EQ(recommend.status, 501);
}

TEST_F(RestApiTest, ScrollPagesInIdOrderNumbersFirst) {
  CreateDocs();
  Answer first = Call("POST", "/collections/docs/points/scroll", R"({"limit":4})");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.body["result"]["points"].size(), 4u);
  EXPECT_EQ(first.body["result"]["points"][0]["payload"]["n"], 1);  // Payload by default.
  EXPECT_EQ(first.body["result"]["next_page_offset"], 5);
  Answer second = Call("POST", "/collections/docs/points/scroll", R"({"limit":4,"offset":5})");
  EXPECT_EQ(second.body["result"]["points"].size(), 2u);
  EXPECT_EQ(second.body["result"]["points"][1]["id"], "6f1c2a3b-0000-4000-8000-000000000001");
  EXPECT_TRUE(second.body["result"]["next_page_offset"].is_null());
}

TEST_F(RestApiTest, CountWithFilters) {
  CreateDocs();
  auto count = [&](const std::string& filter) {
    return Call("POST", "/collections/docs/points/count", R"({"filter":)" + filter + "}")
        .body["result"]["count"];
  };
  EXPECT_EQ(Call("POST", "/collections/docs/points/count", "").body["result"]["count"], 6);
  EXPECT_EQ(count(R"({"must":[{"key":"color","match":{"any":["red","green"]}}]})"), 4);
  EXPECT_EQ(count(R"({"must_not":[{"key":"color","match":{"value":"red"}}]})"), 3);
  EXPECT_EQ(count(R"({"must":{"key":"n","range":{"gte":2,"lt":4}}})"), 2);
  EXPECT_EQ(count(R"({"should":[{"has_id":[1,2]},{"key":"tags","match":{"value":"b"}}]})"), 3);
  EXPECT_EQ(count(R"({"must":[{"is_empty":{"key":"color"}}]})"), 1);
  EXPECT_EQ(count(R"({"must":[{"must":[{"key":"n","match":{"except":[1,2,3]}}]}]})"), 2);
  EXPECT_EQ(count(R"({"min_should":{"conditions":[{"key":"n","match":{"value":1}},
                 {"key":"color","match":{"value":"red"}}],"min_count":2}})"),
            1);
  Answer geo = Call("POST", "/collections/docs/points/count",
                    R"({"filter":{"must":[{"key":"loc","geo_radius":{}}]}})");
  EXPECT_EQ(geo.status, 501);
  EXPECT_THAT(geo.body["status"]["error"].get<std::string>(), HasSubstr("geo_radius"));
}

TEST_F(RestApiTest, DeleteByIdsAndByFilter) {
  CreateDocs();
  Answer by_ids =
      Call("POST", "/collections/docs/points/delete?wait=true", R"({"points":[1,2,99]})");
  ASSERT_EQ(by_ids.status, 200) << by_ids.body;
  EXPECT_EQ(by_ids.body["result"]["status"], "completed");
  Answer by_filter = Call("POST", "/collections/docs/points/delete?wait=true",
                          R"({"filter":{"must":[{"key":"color","match":{"value":"red"}}]}})");
  ASSERT_EQ(by_filter.status, 200) << by_filter.body;
  EXPECT_EQ(Call("POST", "/collections/docs/points/count", "{}").body["result"]["count"], 2);
  EXPECT_EQ(Call("POST", "/collections/docs/points/delete", R"({"nothing":1})").status, 400);
}

TEST_F(RestApiTest, BadInputIs400AndValidationIs422) {
  CreateDocs();
  Answer not_json = Call("POST", "/collections/docs/points/count", "{not json");
  EXPECT_EQ(not_json.status, 400);
  EXPECT_THAT(not_json.body["status"]["error"].get<std::string>(),
              HasSubstr("Format error in JSON body"));
  EXPECT_EQ(Call("POST", "/collections/docs/points/count", "[1]").status, 400);
  Answer dimension =
      Call("POST", "/collections/docs/points/search", R"({"vector":[1,2,3],"limit":1})");
  EXPECT_EQ(dimension.status, 400);
  EXPECT_EQ(dimension.body["status"]["error"],
            "Wrong input: Vector dimension error: expected dim: 4, got 3");
  Answer limit_zero = Call("POST", "/collections/docs/points/query", R"({"limit":0})");
  EXPECT_EQ(limit_zero.status, 422);
  EXPECT_EQ(limit_zero.body["status"]["error"],
            "Validation error in JSON body: [limit: value 0 invalid, must be 1 or larger]");
  EXPECT_EQ(Call("POST", "/collections/docs/points/search", R"({"vector":[1,0,0,0]})").status, 400);
  EXPECT_EQ(Call("POST", "/collections/docs/points", R"({"ids":[-1]})").status, 400);
  EXPECT_EQ(Call("POST", "/collections/docs/points", R"({"ids":["zz"]})").status, 400);
  EXPECT_EQ(Call("PUT", "/collections/docs/points", R"({"points":[{"vector":[1,1,1,1]}]})").status,
            400);
}

TEST_F(RestApiTest, PercentEncodedCollectionNames) {
  ASSERT_EQ(
      Call("PUT", "/collections/my%20docs", R"({"vectors":{"size":1,"distance":"Dot"}})").status,
      200);
  EXPECT_EQ(Call("GET", "/collections").body["result"]["collections"][0]["name"], "my docs");
}

TEST_F(RestApiTest, HttpStatusForEveryCode) {
  EXPECT_EQ(RestApi::HttpStatusFor(absl::StatusCode::kUnavailable, ""), 503);
  EXPECT_EQ(RestApi::HttpStatusFor(absl::StatusCode::kResourceExhausted, ""), 429);
  EXPECT_EQ(RestApi::HttpStatusFor(absl::StatusCode::kUnauthenticated, ""), 401);
  EXPECT_EQ(RestApi::HttpStatusFor(absl::StatusCode::kPermissionDenied, ""), 403);
  EXPECT_EQ(RestApi::HttpStatusFor(absl::StatusCode::kDeadlineExceeded, ""), 408);
  EXPECT_EQ(RestApi::HttpStatusFor(absl::StatusCode::kInternal, ""), 500);
  EXPECT_EQ(RestApi::HttpStatusFor(absl::StatusCode::kInvalidArgument, "Wrong input"), 400);
  EXPECT_EQ(RestApi::HttpStatusFor(absl::StatusCode::kInvalidArgument, "Validation error: x"), 422);
}

}  // namespace
}  // namespace qpool::emulator
