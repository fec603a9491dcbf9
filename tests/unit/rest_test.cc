// The REST front door's pure parts: the one route table (daemon/common/qdrant_methods) and the
// retry classes it gives REST calls (gzip bodies included), hop-by-hop header removal, Qdrant's
// error shape, the ?timeout= reading, and chunked trailers (the parser that keeps them apart, the
// last chunk that carries them).
#include <gtest/gtest.h>
#include <zlib.h>

#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/http/fields.hpp>
#include <string>
#include <utility>
#include <vector>

#include "daemon/common/qdrant_methods.h"
#include "daemon/rest/http_util.h"
#include "daemon/retry/method_class.h"
#include "nlohmann/json.hpp"

namespace qpool {
namespace {

using retry::RetryClass;

std::string Gzip(const std::string& text) {
  z_stream stream{};
  deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(compressBound(static_cast<uLong>(text.size())) + 64, '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  stream.avail_in = static_cast<uInt>(text.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  deflate(&stream, Z_FINISH);
  out.resize(out.size() - stream.avail_out);
  deflateEnd(&stream);
  return out;
}

RetryClass Classify(std::string_view verb, std::string_view path, const std::string& body = "",
                    std::string_view encoding = "") {
  static const retry::MethodClassifier classifier;
  return classifier.ClassifyRest(FindQdrantRestRoute(verb, path), body, encoding);
}

TEST(RestRouteTest, RoutesMapToTheirGrpcTwin) {
  const QdrantRestRoute* search = FindQdrantRestRoute("POST", "/collections/c/points/search");
  ASSERT_NE(search, nullptr);
  EXPECT_EQ(search->grpc_method, "/qdrant.Points/Search");
  ASSERT_NE(GrpcTwinOf(*search), nullptr);
  EXPECT_EQ(KindOf(*search), MethodKind::kRead);
  EXPECT_EQ(KindOf(*FindQdrantRestRoute("PUT", "/collections/c")), MethodKind::kAdmin);
  EXPECT_EQ(FindQdrantRestRoute("POST", "/collections/c/points/search/"), search);
  // GET .../points/{id}: "search" is a point id there, as Qdrant routes it.
  EXPECT_EQ(FindQdrantRestRoute("GET", "/collections/c/points/search")->grpc_method,
            "/qdrant.Points/Get");
  EXPECT_EQ(FindQdrantRestRoute("PATCH", "/collections/c/points/search"), nullptr);
  EXPECT_EQ(FindQdrantRestRoute("GET", "/no/such/route"), nullptr);
  EXPECT_EQ(FindQdrantRestRoute("GET", "/collections//exists"), nullptr);  // empty segment
  EXPECT_EQ(FindQdrantRestRoute("GET", "/collections/aliases")->grpc_method,
            "/qdrant.Collections/Get");  // a collection named "aliases", as Qdrant routes it
}

TEST(RestRouteTest, EveryNamedTwinIsInTheGrpcTable) {
  for (const QdrantRestRoute& route : QdrantRestRoutes()) {
    if (route.grpc_method.empty()) continue;
    EXPECT_NE(GrpcTwinOf(route), nullptr) << route.verb << " " << route.pattern;
  }
}

TEST(RestRetryClassTest, ReadsAndNeverRoutes) {
  EXPECT_EQ(Classify("POST", "/collections/c/points/search"), RetryClass::kRead);
  EXPECT_EQ(Classify("POST", "/collections/c/points/query"), RetryClass::kRead);
  EXPECT_EQ(Classify("GET", "/"), RetryClass::kRead);
  EXPECT_EQ(Classify("GET", "/collections/c/exists"), RetryClass::kRead);
  EXPECT_EQ(Classify("PUT", "/collections/c"), RetryClass::kNeverRepeat);
  EXPECT_EQ(Classify("DELETE", "/collections/c"), RetryClass::kNeverRepeat);
  EXPECT_EQ(Classify("POST", "/collections/c/points/batch"), RetryClass::kFilterScopedWrite);
  EXPECT_EQ(Classify("GET", "/not/qdrant"), RetryClass::kNeverRepeat);
}

TEST(RestRetryClassTest, DeleteByIdsIsIdScopedByFilterIsNot) {
  EXPECT_EQ(Classify("POST", "/collections/c/points/delete", R"({"points":[1,2,3]})"),
            RetryClass::kIdScopedWrite);
  EXPECT_EQ(Classify("POST", "/collections/c/points/delete",
                     R"({"filter":{"must":[{"key":"k","match":{"value":1}}]}})"),
            RetryClass::kFilterScopedWrite);
  // A nested "points" (inside the filter) does not make it id-scoped.
  EXPECT_EQ(Classify("POST", "/collections/c/points/delete",
                     R"({"filter":{"must":[{"has_id":[1]}],"points":[1]}})"),
            RetryClass::kFilterScopedWrite);
  EXPECT_EQ(Classify("POST", "/collections/c/points/delete", R"({})"),
            RetryClass::kFilterScopedWrite);
  EXPECT_EQ(Classify("POST", "/collections/c/points/delete", R"({"points":[1)"),
            RetryClass::kFilterScopedWrite);  // unreadable: the safe side
  EXPECT_EQ(
      Classify("POST", "/collections/c/points/payload", R"({"payload":{"a":1},"points":[7]})"),
      RetryClass::kIdScopedWrite);
}

TEST(RestRetryClassTest, UpsertIsIdScopedUnlessConditional) {
  EXPECT_EQ(Classify("PUT", "/collections/c/points", R"({"points":[{"id":1,"vector":[1]}]})"),
            RetryClass::kIdScopedWrite);
  EXPECT_EQ(Classify("PUT", "/collections/c/points",
                     R"({"points":[{"id":1,"vector":[1]}],"update_filter":{"must":[]}})"),
            RetryClass::kFilterScopedWrite);
}

TEST(RestRetryClassTest, GzipBodiesAreInflatedForTheInspection) {
  EXPECT_EQ(Classify("POST", "/collections/c/points/delete", Gzip(R"({"points":[1,2]})"), "gzip"),
            RetryClass::kIdScopedWrite);
  EXPECT_EQ(Classify("POST", "/collections/c/points/delete", Gzip(R"({"filter":{}})"), "gzip"),
            RetryClass::kFilterScopedWrite);
  EXPECT_EQ(Classify("POST", "/collections/c/points/delete", "not gzip", "gzip"),
            RetryClass::kFilterScopedWrite);
  EXPECT_EQ(Classify("POST", "/collections/c/points/delete", R"({"points":[1]})", "br"),
            RetryClass::kFilterScopedWrite);  // cannot read it: the safe side
}

TEST(RestRetryClassTest, ConfigOverridesApplyToTheRestTwin) {
  retry::MethodClassifier classifier;
  classifier.Override("/qdrant.Points/Delete", RetryClass::kNeverRepeat);
  EXPECT_EQ(classifier.ClassifyRest(FindQdrantRestRoute("POST", "/collections/c/points/delete"),
                                    R"({"points":[1]})", ""),
            RetryClass::kNeverRepeat);
}

TEST(RestHttpTest, StripHopByHopRemovesConnectionAndWhatItNames) {
  boost::beast::http::fields fields;
  fields.set("Connection", "keep-alive, X-Hop");
  fields.insert("Connection", "Upgrade");
  fields.set("X-Hop", "1");
  fields.set("Keep-Alive", "timeout=5");
  fields.set("TE", "trailers");
  fields.set("Transfer-Encoding", "chunked");
  fields.set("Upgrade", "h2c");
  fields.set("Proxy-Connection", "keep-alive");
  fields.set("Proxy-Authorization", "Basic x");
  fields.set("api-key", "secret");
  fields.set("Content-Encoding", "gzip");
  EXPECT_TRUE(rest::StripHopByHop(fields));  // TE said "trailers"
  for (const char* gone : {"Connection", "X-Hop", "Keep-Alive", "TE", "Transfer-Encoding",
                           "Upgrade", "Proxy-Connection", "Proxy-Authorization"}) {
    EXPECT_EQ(fields.count(gone), 0u) << gone;
  }
  EXPECT_EQ(fields["api-key"], "secret");
  EXPECT_EQ(fields["Content-Encoding"], "gzip");
}

TEST(RestHttpTest, StripHopByHopWithoutNamedFieldsAndWithSeveralConnectionFields) {
  boost::beast::http::fields plain;
  plain.set("Connection", "close");
  plain.set("Keep-Alive", "timeout=5");
  plain.set("Content-Type", "application/json");
  EXPECT_FALSE(rest::StripHopByHop(plain));
  EXPECT_EQ(plain.count("Connection"), 0u);
  EXPECT_EQ(plain.count("Keep-Alive"), 0u);
  EXPECT_EQ(plain["Content-Type"], "application/json");

  // The second Connection field names a field; the first only says close.
  boost::beast::http::fields two;
  two.insert("Connection", "close");
  two.insert("Connection", "X-Hop");
  two.set("X-Hop", "1");
  two.set("X-Kept", "2");
  rest::StripHopByHop(two);
  EXPECT_EQ(two.count("Connection"), 0u);
  EXPECT_EQ(two.count("X-Hop"), 0u);
  EXPECT_EQ(two["X-Kept"], "2");
}

TEST(RestHttpTest, StripHopByHopTellsWhetherTeListedTrailers) {
  for (const auto& [value, trailers] :
       std::vector<std::pair<std::string, bool>>{{"trailers", true},
                                                 {"deflate;q=0.5, Trailers", true},
                                                 {"gzip", false},
                                                 {"x-trailers", false}}) {
    boost::beast::http::fields fields;
    fields.set("TE", value);
    fields.set("Connection", "TE");
    EXPECT_EQ(rest::StripHopByHop(fields), trailers) << value;
    EXPECT_EQ(fields.count("TE"), 0u);
    EXPECT_EQ(fields.count("Connection"), 0u);
  }
}

// TrailerParser: the header's fields stay the header's, the trailer fields go apart (Beast's own
// parser puts them among the header's fields, a same-named one next to its namesake).
TEST(RestHttpTest, TrailerParserKeepsTrailerFieldsApart) {
  const std::string wire =
      "POST /x HTTP/1.1\r\nHost: h\r\nX-Sum: head\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3;name=value\r\nabc\r\n0\r\nX-Sum: 1\r\nChecksum:  2 \r\n\r\n";
  rest::TrailerParser<true> parser;
  char body[16];
  parser.get().body().data = body;
  parser.get().body().size = sizeof(body);
  boost::beast::error_code ec;
  size_t used = 0;
  while (!parser.is_done() && !ec) {
    used += parser.put(boost::asio::buffer(wire.data() + used, wire.size() - used), ec);
  }
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(used, wire.size());
  EXPECT_EQ(std::string(body, sizeof(body) - parser.get().body().size), "abc");
  EXPECT_EQ(parser.get().count("X-Sum"), 1u);
  EXPECT_EQ(parser.get()["X-Sum"], "head");
  EXPECT_EQ(parser.get().count("Checksum"), 0u);
  ASSERT_TRUE(parser.has_trailers());
  EXPECT_EQ(parser.trailers()["X-Sum"], "1");
  EXPECT_EQ(parser.trailers()["Checksum"], "2");

  rest::TrailerParser<false> plain;  // no trailers
  const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  plain.put(boost::asio::buffer(answer), ec);
  EXPECT_TRUE(plain.is_done());
  EXPECT_FALSE(plain.has_trailers());
}

// AppendLastChunk writes what Beast's make_chunk_last writes for the same trailer fields.
TEST(RestHttpTest, LastChunkMatchesBeastsChunkLast) {
  boost::beast::http::fields trailers;
  trailers.insert("X-Checksum", "abc123");
  trailers.insert("x-lower", "a, b");
  trailers.insert("X-Checksum", "second");
  std::string ours = "keep:";
  rest::AppendLastChunk(trailers, ours);
  std::string beasts = "keep:";
  for (auto buffer : boost::beast::buffers_range(boost::beast::http::make_chunk_last(trailers))) {
    beasts.append(static_cast<const char*>(buffer.data()), buffer.size());
  }
  EXPECT_EQ(ours, beasts);
  EXPECT_EQ(ours, "keep:0\r\nX-Checksum: abc123\r\nX-Checksum: second\r\nx-lower: a, b\r\n\r\n");

  std::string none;
  rest::AppendLastChunk(boost::beast::http::fields(), none);
  EXPECT_EQ(none, "0\r\n\r\n");

  std::string header;
  rest::AppendChunkHeader(1, header);
  rest::AppendChunkHeader(0xabc, header);
  rest::AppendChunkHeader(65536, header);
  EXPECT_EQ(header, "1\r\nabc\r\n10000\r\n");
}

// SerializeHead writes what Beast's serializer writes for the same head, byte for byte.
template <bool kIsRequest>
std::string BeastHead(const boost::beast::http::header<kIsRequest>& head) {
  boost::beast::http::message<kIsRequest, boost::beast::http::empty_body> message(head);
  boost::beast::http::serializer<kIsRequest, boost::beast::http::empty_body> serializer(message);
  serializer.split(true);
  std::string out;
  boost::beast::error_code ec;
  while (!serializer.is_header_done()) {
    serializer.next(ec, [&](boost::beast::error_code&, const auto& buffers) {
      for (auto buffer : boost::beast::buffers_range_ref(buffers)) {
        out.append(static_cast<const char*>(buffer.data()), buffer.size());
      }
      serializer.consume(boost::beast::buffer_bytes(buffers));
    });
  }
  return out;
}

TEST(RestHttpTest, SerializeHeadMatchesBeastsSerializer) {
  boost::beast::http::request_header<> request;
  request.method(boost::beast::http::verb::post);
  request.target("/collections/c/points/search?timeout=3");
  request.version(11);
  request.set(boost::beast::http::field::host, "127.0.0.1:6333");
  request.set(boost::beast::http::field::content_type, "application/json");
  request.insert("X-Custom", "a, b");
  request.set(boost::beast::http::field::content_length, "42");
  std::string head = "leftover";
  rest::SerializeHead(request, head);
  EXPECT_EQ(head, BeastHead(request));
  EXPECT_EQ(head.substr(0, head.find("\r\n") + 2),
            "POST /collections/c/points/search?timeout=3 HTTP/1.1\r\n");

  // The Host of the node, in place of the app's.
  rest::SerializeHead(request, head, "10.0.0.7:6333");
  EXPECT_EQ(head.find("Host: 127.0.0.1:6333"), std::string::npos);
  EXPECT_EQ(head.substr(0, head.find("Content-Type")),
            "POST /collections/c/points/search?timeout=3 HTTP/1.1\r\nHost: 10.0.0.7:6333\r\n");
  request.set(boost::beast::http::field::host, "10.0.0.7:6333");
  std::string reference = BeastHead(request);
  std::string with_override;
  rest::SerializeHead(request, with_override, "10.0.0.7:6333");
  EXPECT_EQ(with_override.size(), reference.size());  // the same fields, Host moved first

  request.method_string("PURGE");  // a method Beast has no enum for
  rest::SerializeHead(request, head);
  EXPECT_EQ(head, BeastHead(request));

  boost::beast::http::response_header<> response;
  response.result(200);
  response.version(10);
  response.reason("Fine");  // Qdrant's reason phrase travels as it came
  response.set(boost::beast::http::field::content_type, "application/json");
  response.set(boost::beast::http::field::content_length, "7");
  rest::SerializeHead(response, head);
  EXPECT_EQ(head, BeastHead(response));
  EXPECT_EQ(head.substr(0, head.find("\r\n") + 2), "HTTP/1.0 200 Fine\r\n");

  boost::beast::http::response_header<> bare;  // no reason: the standard one
  bare.result(404);
  bare.version(11);
  rest::SerializeHead(bare, head);
  EXPECT_EQ(head, BeastHead(bare));
  EXPECT_EQ(head, "HTTP/1.1 404 Not Found\r\n\r\n");
}

TEST(RestHttpTest, ErrorBodyIsQdrantsShape) {
  const std::string body = rest::ErrorBody("quote \" and \\ and \n");
  const auto json = nlohmann::json::parse(body);
  EXPECT_EQ(json["status"]["error"], "quote \" and \\ and \n");
  EXPECT_EQ(json["time"], 0.0);
  EXPECT_EQ(rest::ErrorBody("x"), R"({"status":{"error":"x"},"time":0.0})");
}

TEST(RestHttpTest, QueryTimeoutAndPath) {
  EXPECT_EQ(rest::QueryTimeout("/c/points/search?timeout=30"), std::chrono::seconds(30));
  EXPECT_EQ(rest::QueryTimeout("/c/points/search?wait=true&timeout=5"), std::chrono::seconds(5));
  EXPECT_EQ(rest::QueryTimeout("/c/points/search?wait=true"), std::nullopt);
  EXPECT_EQ(rest::QueryTimeout("/c/points/search?timeout=abc"), std::nullopt);
  EXPECT_EQ(rest::PathOf("/a/b?x=1"), "/a/b");
  EXPECT_EQ(rest::PathOf("/a/b"), "/a/b");
}

}  // namespace
}  // namespace qpool
