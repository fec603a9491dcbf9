#include "emulator/rest_api.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "daemon/common/status.h"
#include "emulator/rest_json.h"

namespace qpool::emulator {
namespace {

using Query = std::map<std::string, std::string>;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = absl::ascii_tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

// Percent-decoding; a malformed escape is kept as is. `plus_is_space` for query strings.
std::string Unescape(absl::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int hi = HexValue(text[i + 1]), lo = HexValue(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && text[i] == '+' ? ' ' : text[i]);
  }
  return out;
}

Query ParseQuery(absl::string_view query) {
  Query out;
  for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(pair, absl::MaxSplits('=', 1));
    out[Unescape(kv.first, true)] = Unescape(kv.second, true);
  }
  return out;
}

// `wait` of a write: absent or "false" is false (Qdrant's default), "true" is true.
absl::StatusOr<bool> WaitParam(const Query& query) {
  auto it = query.find("wait");
  if (it == query.end() || it->second == "false") return false;
  if (it->second == "true" || it->second.empty()) return true;
  return absl::InvalidArgumentError(absl::StrCat(
      "Deserialize error in query parameters: wait: provided string was not `true` or `false`"));
}

const Json& Field(const Json& object, const char* name) { return JsonField(object, name); }

// Whether points in the answer carry a payload: the request's selector, else `by_default`.
bool PayloadRequested(const qdrant::WithPayloadSelector& selector, bool by_default) {
  switch (selector.selector_options_case()) {
    case qdrant::WithPayloadSelector::kEnable:
      return selector.enable();
    case qdrant::WithPayloadSelector::SELECTOR_OPTIONS_NOT_SET:
      return by_default;
    default:
      return true;
  }
}

absl::Status ReadProjection(const Json& body, qdrant::WithPayloadSelector* payload,
                            qdrant::WithVectorsSelector* vectors) {
  QPOOL_RETURN_IF_ERROR(WithPayloadFromJson(Field(body, "with_payload"), payload));
  const Json& with_vector = Field(body, "with_vector");
  return WithVectorsFromJson(with_vector.is_null() ? Field(body, "with_vectors") : with_vector,
                             vectors);
}

absl::StatusOr<uint64_t> UnsignedField(const Json& body, const char* name, uint64_t fallback) {
  const Json& value = Field(body, name);
  if (value.is_null()) return fallback;
  if (!value.is_number_unsigned()) {
    return FormatError(absl::StrCat(name, ": expected an unsigned integer, got ", value.dump()));
  }
  return value.get<uint64_t>();
}

absl::Status ReadScoreThreshold(const Json& body, std::function<void(float)> set) {
  const Json& value = Field(body, "score_threshold");
  if (value.is_null()) return absl::OkStatus();
  if (!value.is_number()) {
    return FormatError(absl::StrCat("score_threshold: expected a number, got ", value.dump()));
  }
  set(value.get<float>());
  return absl::OkStatus();
}

// A path point id: digits are a number, anything else a UUID (checked by the store).
qdrant::PointId PathPointId(const std::string& text) {
  qdrant::PointId id;
  uint64_t num;
  if (!text.empty() && absl::SimpleAtoi(text, &num) &&
      std::all_of(text.begin(), text.end(), [](char c) { return absl::ascii_isdigit(c); })) {
    id.set_num(num);
  } else {
    id.set_uuid(text);
  }
  return id;
}

// `query` of Points/Query: a vector or a point id (nearest), or {"nearest": either}.
absl::Status QueryFromJson(const Json& json, qdrant::QueryPoints* request) {
  if (json.is_null()) return absl::OkStatus();
  qdrant::VectorInput* nearest = request->mutable_query()->mutable_nearest();
  if (json.is_array()) return DenseFromJson(json, nearest->mutable_dense()->mutable_data());
  if (json.is_number_unsigned() || json.is_string()) {
    QPOOL_ASSIGN_OR_RETURN(*nearest->mutable_id(), PointIdFromJson(json));
    return absl::OkStatus();
  }
  if (json.is_object() && json.contains("nearest")) {
    const Json& inner = Field(json, "nearest");
    if (inner.is_object()) {
      return absl::UnimplementedError(
          "qdrant-emulator supports query.nearest with a dense vector or a point id only");
    }
    return QueryFromJson(inner, request);
  }
  return absl::UnimplementedError("qdrant-emulator supports only query.nearest");
}

class Routes {
 public:
  Routes(const Handlers& handlers, const Query& query, const Json& body)
      : handlers_(handlers), query_(query), body_(body) {}

  absl::StatusOr<Json> ListCollections() {
    qdrant::ListCollectionsResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.ListCollections({}, &reply));
    Json list = Json::array();
    for (const auto& c : reply.collections()) list.push_back({{"name", c.name()}});
    return Json{{"collections", list}};
  }

  absl::StatusOr<Json> CreateCollection(const std::string& name) {
    qdrant::CreateCollection request;
    request.set_collection_name(name);
    const Json& vectors = Field(body_, "vectors");
    if (!vectors.is_null()) {
      QPOOL_RETURN_IF_ERROR(VectorsConfigFromJson(vectors, request.mutable_vectors_config()));
    }
    qdrant::CollectionOperationResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.CreateCollection(request, &reply));
    return Json(reply.result());
  }

  absl::StatusOr<Json> GetCollection(const std::string& name) {
    qdrant::GetCollectionInfoRequest request;
    request.set_collection_name(name);
    qdrant::GetCollectionInfoResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.GetCollection(request, &reply));
    return CollectionInfoToJson(reply.result());
  }

  absl::StatusOr<Json> DeleteCollection(const std::string& name) {
    qdrant::DeleteCollection request;
    request.set_collection_name(name);
    qdrant::CollectionOperationResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.DeleteCollection(request, &reply));
    return Json(reply.result());
  }

  absl::StatusOr<Json> CollectionExists(const std::string& name) {
    qdrant::CollectionExistsRequest request;
    request.set_collection_name(name);
    qdrant::CollectionExistsResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.CollectionExists(request, &reply));
    return Json{{"exists", reply.result().exists()}};
  }

  absl::StatusOr<Json> Upsert(const std::string& name) {
    qdrant::UpsertPoints request;
    request.set_collection_name(name);
    QPOOL_ASSIGN_OR_RETURN(bool wait, WaitParam(query_));
    request.set_wait(wait);
    if (const Json& points = Field(body_, "points"); points.is_array()) {
      for (const Json& point : points) {
        QPOOL_RETURN_IF_ERROR(PointFromJson(point, request.add_points()));
      }
    } else if (const Json& batch = Field(body_, "batch"); batch.is_object()) {
      QPOOL_RETURN_IF_ERROR(BatchFromJson(batch, &request));
    } else {
      return FormatError("expected `points` (a list) or `batch` (an object)");
    }
    if (const Json& update_filter = Field(body_, "update_filter"); !update_filter.is_null()) {
      QPOOL_RETURN_IF_ERROR(FilterFromJson(update_filter, request.mutable_update_filter()));
    }
    qdrant::PointsOperationResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.Upsert(request, &reply));
    return UpdateResultToJson(reply.result());
  }

  absl::StatusOr<Json> DeletePoints(const std::string& name) {
    qdrant::DeletePoints request;
    request.set_collection_name(name);
    QPOOL_ASSIGN_OR_RETURN(bool wait, WaitParam(query_));
    request.set_wait(wait);
    if (const Json& ids = Field(body_, "points"); ids.is_array()) {
      auto* list = request.mutable_points()->mutable_points()->mutable_ids();
      for (const Json& id : ids) {
        QPOOL_ASSIGN_OR_RETURN(*list->Add(), PointIdFromJson(id));
      }
    } else if (const Json& filter = Field(body_, "filter"); filter.is_object()) {
      QPOOL_RETURN_IF_ERROR(FilterFromJson(filter, request.mutable_points()->mutable_filter()));
    } else {
      return FormatError("expected `points` (a list of ids) or `filter` (an object)");
    }
    qdrant::PointsOperationResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.Delete(request, &reply));
    return UpdateResultToJson(reply.result());
  }

  absl::StatusOr<Json> GetPoints(const std::string& name) {
    qdrant::GetPoints request;
    request.set_collection_name(name);
    const Json& ids = Field(body_, "ids");
    if (!ids.is_array()) return FormatError("ids: expected a list of point ids");
    for (const Json& id : ids) {
      QPOOL_ASSIGN_OR_RETURN(*request.add_ids(), PointIdFromJson(id));
    }
    QPOOL_RETURN_IF_ERROR(
        ReadProjection(body_, request.mutable_with_payload(), request.mutable_with_vectors()));
    qdrant::GetResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.Get(request, &reply));
    Json points = Json::array();
    bool with_payload = PayloadRequested(request.with_payload(), true);
    for (const auto& point : reply.result()) {
      points.push_back(RetrievedPointToJson(point, with_payload));
    }
    return points;
  }

  absl::StatusOr<Json> GetPoint(const std::string& name, const std::string& id) {
    qdrant::GetPoints request;
    request.set_collection_name(name);
    *request.add_ids() = PathPointId(id);
    request.mutable_with_payload()->set_enable(true);
    request.mutable_with_vectors()->set_enable(true);
    qdrant::GetResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.Get(request, &reply));
    if (reply.result().empty()) {
      return absl::NotFoundError(absl::StrCat("Not found: No point with id ", id, " found"));
    }
    return RetrievedPointToJson(reply.result(0), true);
  }

  absl::StatusOr<Json> Count(const std::string& name) {
    qdrant::CountPoints request;
    request.set_collection_name(name);
    if (const Json& filter = Field(body_, "filter"); !filter.is_null()) {
      QPOOL_RETURN_IF_ERROR(FilterFromJson(filter, request.mutable_filter()));
    }
    request.set_exact(true);
    qdrant::CountResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.Count(request, &reply));
    return Json{{"count", reply.result().count()}};
  }

  absl::StatusOr<Json> Search(const std::string& name) {
    qdrant::SearchPoints request;
    request.set_collection_name(name);
    const Json& vector = Field(body_, "vector");
    if (vector.is_object()) {
      const Json& vector_name = Field(vector, "name");
      if (!vector_name.is_string()) return FormatError("vector.name: expected a string");
      request.set_vector_name(vector_name.get<std::string>());
      QPOOL_RETURN_IF_ERROR(DenseFromJson(Field(vector, "vector"), request.mutable_vector()));
    } else if (vector.is_null()) {
      return FormatError("missing field `vector`");
    } else {
      QPOOL_RETURN_IF_ERROR(DenseFromJson(vector, request.mutable_vector()));
    }
    if (Field(body_, "limit").is_null()) return FormatError("missing field `limit`");
    QPOOL_ASSIGN_OR_RETURN(uint64_t limit, UnsignedField(body_, "limit", 0));
    request.set_limit(limit);
    QPOOL_ASSIGN_OR_RETURN(uint64_t offset, UnsignedField(body_, "offset", 0));
    request.set_offset(offset);
    if (const Json& filter = Field(body_, "filter"); !filter.is_null()) {
      QPOOL_RETURN_IF_ERROR(FilterFromJson(filter, request.mutable_filter()));
    }
    QPOOL_RETURN_IF_ERROR(
        ReadScoreThreshold(body_, [&](float t) { request.set_score_threshold(t); }));
    QPOOL_RETURN_IF_ERROR(
        ReadProjection(body_, request.mutable_with_payload(), request.mutable_with_vectors()));
    qdrant::SearchResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.Search(request, &reply));
    Json points = Json::array();
    bool with_payload = PayloadRequested(request.with_payload(), false);
    for (const auto& point : reply.result()) {
      points.push_back(ScoredPointToJson(point, with_payload));
    }
    return points;
  }

  absl::StatusOr<Json> QueryPoints(const std::string& name) {
    qdrant::QueryPoints request;
    request.set_collection_name(name);
    if (const Json& prefetch = Field(body_, "prefetch");
        (prefetch.is_array() && !prefetch.empty()) || prefetch.is_object()) {
      request.add_prefetch();  // The handler refuses prefetches, naming them.
    }
    QPOOL_RETURN_IF_ERROR(QueryFromJson(Field(body_, "query"), &request));
    if (const Json& using_name = Field(body_, "using"); using_name.is_string()) {
      request.set_using_(using_name.get<std::string>());
    }
    if (const Json& filter = Field(body_, "filter"); !filter.is_null()) {
      QPOOL_RETURN_IF_ERROR(FilterFromJson(filter, request.mutable_filter()));
    }
    if (!Field(body_, "limit").is_null()) {
      QPOOL_ASSIGN_OR_RETURN(uint64_t limit, UnsignedField(body_, "limit", 10));
      request.set_limit(limit);
    }
    QPOOL_ASSIGN_OR_RETURN(uint64_t offset, UnsignedField(body_, "offset", 0));
    request.set_offset(offset);
    QPOOL_RETURN_IF_ERROR(
        ReadScoreThreshold(body_, [&](float t) { request.set_score_threshold(t); }));
    QPOOL_RETURN_IF_ERROR(
        ReadProjection(body_, request.mutable_with_payload(), request.mutable_with_vectors()));
    qdrant::QueryResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.Query(request, &reply));
    Json points = Json::array();
    bool with_payload = PayloadRequested(request.with_payload(), false);
    for (const auto& point : reply.result()) {
      points.push_back(ScoredPointToJson(point, with_payload));
    }
    return Json{{"points", points}};
  }

  absl::StatusOr<Json> Scroll(const std::string& name) {
    qdrant::ScrollPoints request;
    request.set_collection_name(name);
    if (!Field(body_, "order_by").is_null()) {
      return absl::UnimplementedError("qdrant-emulator does not support scroll order_by");
    }
    if (const Json& offset = Field(body_, "offset"); !offset.is_null()) {
      QPOOL_ASSIGN_OR_RETURN(*request.mutable_offset(), PointIdFromJson(offset));
    }
    if (!Field(body_, "limit").is_null()) {
      QPOOL_ASSIGN_OR_RETURN(uint64_t limit, UnsignedField(body_, "limit", 10));
      request.set_limit(static_cast<uint32_t>(std::min<uint64_t>(limit, UINT32_MAX)));
    }
    if (const Json& filter = Field(body_, "filter"); !filter.is_null()) {
      QPOOL_RETURN_IF_ERROR(FilterFromJson(filter, request.mutable_filter()));
    }
    QPOOL_RETURN_IF_ERROR(
        ReadProjection(body_, request.mutable_with_payload(), request.mutable_with_vectors()));
    qdrant::ScrollResponse reply;
    QPOOL_RETURN_IF_ERROR(handlers_.Scroll(request, &reply));
    Json points = Json::array();
    bool with_payload = PayloadRequested(request.with_payload(), true);
    for (const auto& point : reply.result()) {
      points.push_back(RetrievedPointToJson(point, with_payload));
    }
    Json next =
        reply.has_next_page_offset() ? PointIdToJson(reply.next_page_offset()) : Json(nullptr);
    return Json{{"points", points}, {"next_page_offset", next}};
  }

 private:
  // {"ids": [...], "vectors": [[...]] or {"name": [[...]]}, "payloads": [...]}.
  absl::Status BatchFromJson(const Json& batch, qdrant::UpsertPoints* request) {
    const Json& ids = Field(batch, "ids");
    const Json& vectors = Field(batch, "vectors");
    const Json& payloads = Field(batch, "payloads");
    if (!ids.is_array()) return FormatError("batch.ids: expected a list");
    size_t n = ids.size();
    if ((vectors.is_array() && vectors.size() != n) ||
        (payloads.is_array() && payloads.size() != n)) {
      return absl::InvalidArgumentError(
          "Wrong input: batch ids, vectors and payloads must have the same length");
    }
    for (size_t i = 0; i < n; ++i) {
      qdrant::PointStruct* point = request->add_points();
      QPOOL_ASSIGN_OR_RETURN(*point->mutable_id(), PointIdFromJson(ids[i]));
      if (vectors.is_array()) {
        QPOOL_RETURN_IF_ERROR(DenseFromJson(
            vectors[i],
            point->mutable_vectors()->mutable_vector()->mutable_dense()->mutable_data()));
      } else if (vectors.is_object()) {
        auto& named = *point->mutable_vectors()->mutable_vectors()->mutable_vectors();
        for (const auto& [vector_name, list] : vectors.items()) {
          if (!list.is_array() || list.size() != n) {
            return FormatError(
                absl::StrCat("batch.vectors.", vector_name, ": expected ", n, " vectors"));
          }
          QPOOL_RETURN_IF_ERROR(
              DenseFromJson(list[i], named[vector_name].mutable_dense()->mutable_data()));
        }
      }
      if (payloads.is_array()) {
        QPOOL_RETURN_IF_ERROR(PayloadFromJson(payloads[i], point->mutable_payload()));
      }
    }
    return absl::OkStatus();
  }

  const Handlers& handlers_;
  const Query& query_;
  const Json& body_;
};

std::string Envelope(const Json& result, double seconds) {
  return Json{{"result", result}, {"status", "ok"}, {"time", seconds}}.dump();
}

}  // namespace

int RestApi::HttpStatusFor(absl::StatusCode code, absl::string_view message) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
      return absl::StartsWith(message, "Validation error") ? 422 : 400;
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
      return 408;
    case absl::StatusCode::kUnimplemented:
      return 501;
    default:
      return 500;
  }
}

RestReply RestApi::Error(int http_status, absl::string_view message, double seconds) {
  RestReply reply;
  reply.status = http_status;
  reply.body = Json{{"status", {{"error", std::string(message)}}}, {"time", seconds}}.dump();
  return reply;
}

RestReply RestApi::FromStatus(const absl::Status& status, double seconds) {
  std::string message(status.message());
  absl::string_view detail = message;
  // The handlers word validation errors as the gRPC front does ("Validation error: limit: ...");
  // Qdrant's REST layer says "Validation error in JSON body: [limit: ...]".
  if (status.code() == absl::StatusCode::kInvalidArgument &&
      absl::ConsumePrefix(&detail, "Validation error: ")) {
    message = absl::StrCat("Validation error in JSON body: [", detail, "]");
  }
  return Error(HttpStatusFor(status.code(), message), message, seconds);
}

RestReply RestApi::NoRoute(absl::string_view method, absl::string_view target) {
  return Error(
      404, absl::StrCat("Not found: no route ", method, " ", target.substr(0, target.find('?'))));
}

std::optional<RestCall> RestApi::Resolve(absl::string_view method, absl::string_view target,
                                         std::string body) const {
  absl::string_view path = target.substr(0, target.find('?'));
  absl::string_view query_text =
      path.size() < target.size() ? target.substr(path.size() + 1) : absl::string_view();
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    parts.push_back(Unescape(part, false));
  }
  const Handlers& handlers = handlers_;
  RestCall call;

  // Probes and the version document: fixed answers, no JSON body.
  if (method == "GET" && parts.empty()) {
    call.method = "qdrant.Qdrant/HealthCheck";
    call.public_route = true;
    call.run = [&handlers] {
      qdrant::HealthCheckReply health;
      (void)handlers.HealthCheck({}, &health);
      RestReply reply;
      reply.body =
          Json{
              {"title", health.title()}, {"version", health.version()}, {"commit", health.commit()}}
              .dump();
      return reply;
    };
    return call;
  }
  if (method == "GET" && parts.size() == 1 &&
      (parts[0] == "healthz" || parts[0] == "livez" || parts[0] == "readyz")) {
    call.method = absl::StrCat("rest.Probe/", parts[0]);
    call.public_route = true;
    std::string text =
        parts[0] == "readyz" ? "all shards are ready" : absl::StrCat(parts[0], " check passed");
    call.run = [text] {
      RestReply reply;
      reply.body = text;
      reply.content_type = "text/plain; charset=utf-8";
      return reply;
    };
    return call;
  }
  if (parts.empty() || parts[0] != "collections") return std::nullopt;

  // The JSON routes: each is a Routes member producing the `result`.
  using Action = std::function<absl::StatusOr<Json>(Routes&)>;
  Action action;
  std::string collection = parts.size() > 1 ? parts[1] : "";
  bool write = false;
  const size_t n = parts.size();
  if (n == 1 && method == "GET") {
    call.method = "qdrant.Collections/List";
    action = [](Routes& r) { return r.ListCollections(); };
  } else if (n == 2 && method == "PUT") {
    call.method = "qdrant.Collections/Create";
    write = true;
    action = [collection](Routes& r) { return r.CreateCollection(collection); };
  } else if (n == 2 && method == "GET") {
    call.method = "qdrant.Collections/Get";
    action = [collection](Routes& r) { return r.GetCollection(collection); };
  } else if (n == 2 && method == "DELETE") {
    call.method = "qdrant.Collections/Delete";
    write = true;
    action = [collection](Routes& r) { return r.DeleteCollection(collection); };
  } else if (n == 3 && parts[2] == "exists" && method == "GET") {
    call.method = "qdrant.Collections/CollectionExists";
    action = [collection](Routes& r) { return r.CollectionExists(collection); };
  } else if (n == 3 && parts[2] == "points" && method == "PUT") {
    call.method = "qdrant.Points/Upsert";
    write = true;
    action = [collection](Routes& r) { return r.Upsert(collection); };
  } else if (n == 3 && parts[2] == "points" && method == "POST") {
    call.method = "qdrant.Points/Get";
    action = [collection](Routes& r) { return r.GetPoints(collection); };
  } else if (n == 4 && parts[2] == "points" && method == "GET") {
    call.method = "qdrant.Points/Get";
    action = [collection, id = parts[3]](Routes& r) { return r.GetPoint(collection, id); };
  } else if (n == 4 && parts[2] == "points" && method == "POST") {
    const std::string& verb = parts[3];
    if (verb == "delete") {
      call.method = "qdrant.Points/Delete";
      write = true;
      action = [collection](Routes& r) { return r.DeletePoints(collection); };
    } else if (verb == "count") {
      call.method = "qdrant.Points/Count";
      action = [collection](Routes& r) { return r.Count(collection); };
    } else if (verb == "search") {
      call.method = "qdrant.Points/Search";
      action = [collection](Routes& r) { return r.Search(collection); };
    } else if (verb == "query") {
      call.method = "qdrant.Points/Query";
      action = [collection](Routes& r) { return r.QueryPoints(collection); };
    } else if (verb == "scroll") {
      call.method = "qdrant.Points/Scroll";
      action = [collection](Routes& r) { return r.Scroll(collection); };
    }
  }
  if (!action) return std::nullopt;
  if (write) call.write_collection = collection;
  call.run = [&handlers, action = std::move(action), query = ParseQuery(query_text),
              body = std::move(body)] {
    absl::Time start = absl::Now();
    auto seconds = [start] { return absl::ToDoubleSeconds(absl::Now() - start); };
    absl::StatusOr<Json> json = ParseJsonBody(body);
    if (!json.ok()) return FromStatus(json.status(), seconds());
    Routes routes(handlers, query, *json);
    absl::StatusOr<Json> result = action(routes);
    if (!result.ok()) return FromStatus(result.status(), seconds());
    RestReply reply;
    reply.body = Envelope(*result, seconds());
    return reply;
  };
  return call;
}

}  // namespace qpool::emulator
