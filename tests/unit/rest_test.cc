// The REST front door's pure parts: the one route table (daemon/common/qdrant_methods) and the
// retry classes it gives REST calls (gzip bodies included), the flat header parser (HeadParser,
// HeaderFields and its FieldText, HttpHead: edits and wire bytes as Beast's), hop-by-hop header
// removal, Qdrant's error shape, the ?timeout= reading, and chunked trailers (kept apart, passed
// on).
#include <gtest/gtest.h>
#include <zlib.h>

#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/http/fields.hpp>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
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
  rest::HeaderFields fields;
  fields.Set("Connection", "keep-alive, X-Hop");
  fields.Add("Connection", "Upgrade");
  fields.Set("X-Hop", "1");
  fields.Set("Keep-Alive", "timeout=5");
  fields.Set("TE", "trailers");
  fields.Set("Transfer-Encoding", "chunked");
  fields.Set("Upgrade", "h2c");
  fields.Set("Proxy-Connection", "keep-alive");
  fields.Set("Proxy-Authorization", "Basic x");
  fields.Set("api-key", "secret");
  fields.Set("Content-Encoding", "gzip");
  EXPECT_TRUE(rest::StripHopByHop(fields));  // TE said "trailers"
  for (const char* gone : {"Connection", "X-Hop", "Keep-Alive", "TE", "Transfer-Encoding",
                           "Upgrade", "Proxy-Connection", "Proxy-Authorization"}) {
    EXPECT_EQ(fields.Count(gone), 0u) << gone;
  }
  EXPECT_EQ(fields.Get("api-key"), "secret");
  EXPECT_EQ(fields.Get("Content-Encoding"), "gzip");
}

TEST(RestHttpTest, StripHopByHopWithoutNamedFieldsAndWithSeveralConnectionFields) {
  rest::HeaderFields plain;
  plain.Set("Connection", "close");
  plain.Set("Keep-Alive", "timeout=5");
  plain.Set("Content-Type", "application/json");
  EXPECT_FALSE(rest::StripHopByHop(plain));
  EXPECT_EQ(plain.Count("Connection"), 0u);
  EXPECT_EQ(plain.Count("Keep-Alive"), 0u);
  EXPECT_EQ(plain.Get("Content-Type"), "application/json");

  // The second Connection field names a field; the first only says close.
  rest::HeaderFields two;
  two.Add("Connection", "close");
  two.Add("Connection", "X-Hop");
  two.Set("X-Hop", "1");
  two.Set("X-Kept", "2");
  rest::StripHopByHop(two);
  EXPECT_EQ(two.Count("Connection"), 0u);
  EXPECT_EQ(two.Count("X-Hop"), 0u);
  EXPECT_EQ(two.Get("X-Kept"), "2");
}

TEST(RestHttpTest, StripHopByHopTellsWhetherTeListedTrailers) {
  for (const auto& [value, trailers] :
       std::vector<std::pair<std::string, bool>>{{"trailers", true},
                                                 {"deflate;q=0.5, Trailers", true},
                                                 {"gzip", false},
                                                 {"x-trailers", false}}) {
    rest::HeaderFields fields;
    fields.Set("TE", value);
    fields.Set("Connection", "TE");
    EXPECT_EQ(rest::StripHopByHop(fields), trailers) << value;
    EXPECT_EQ(fields.Count("TE"), 0u);
    EXPECT_EQ(fields.Count("Connection"), 0u);
  }
}

// Feeds `wire` to `parser` until it is done (or fails); returns the bytes it took.
template <bool kIsRequest>
size_t ParseAll(rest::HeadParser<kIsRequest>& parser, const std::string& wire,
                boost::beast::error_code& ec) {
  size_t used = 0;
  while (!parser.is_done() && !ec && used < wire.size()) {
    used += parser.put(boost::asio::buffer(wire.data() + used, wire.size() - used), ec);
  }
  return used;
}

// HeadParser: the start line and the fields in order as sent (names as spelled, values trimmed),
// the body into the caller's buffer, and a chunked body's trailer fields apart from the header's.
TEST(RestHttpTest, HeadParserRecordsTheHeaderAndKeepsTrailerFieldsApart) {
  const std::string wire =
      "POST /x?y=1 HTTP/1.1\r\nHost: h\r\nX-Sum:   head  \r\nTransfer-Encoding: chunked\r\n"
      "x-sum: again\r\n\r\n3;name=value\r\nabc\r\n0\r\nX-Sum: 1\r\nChecksum:  2 \r\n\r\n";
  rest::HttpHead head;
  head.fields.Add("Stale", "from the message before");  // the parser clears the head it is given
  rest::HeadParser<true> parser(head);
  char body[16];
  parser.body().data = body;
  parser.body().size = sizeof(body);
  boost::beast::error_code ec;
  EXPECT_EQ(ParseAll(parser, wire, ec), wire.size());
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(std::string(body, sizeof(body) - parser.body().size), "abc");
  EXPECT_EQ(head.method, boost::beast::http::verb::post);
  EXPECT_EQ(head.method_string, "POST");
  EXPECT_EQ(head.target, "/x?y=1");
  EXPECT_EQ(head.version, 11u);
  EXPECT_EQ(head.fields.size(), 4u);
  EXPECT_EQ(head.fields.Count("Stale"), 0u);
  std::vector<std::string> seen;
  head.fields.ForEach([&](const rest::HeaderFields::Field& field) {
    seen.push_back(std::string(field.name_string) + "=" + std::string(field.value));
  });
  EXPECT_EQ(seen, (std::vector<std::string>{"Host=h", "X-Sum=head", "Transfer-Encoding=chunked",
                                            "x-sum=again"}));
  EXPECT_EQ(head.fields.Count("X-SUM"), 2u);
  EXPECT_EQ(head.fields.Get("x-sum"), "head");  // the first
  EXPECT_EQ(head.fields.Get(boost::beast::http::field::host), "h");
  EXPECT_EQ(head.fields.Count("Checksum"), 0u);
  EXPECT_TRUE(head.Chunked());
  ASSERT_TRUE(head.has_trailers);
  EXPECT_EQ(head.trailers.Get("X-Sum"), "1");
  EXPECT_EQ(head.trailers.Get("Checksum"), "2");

  // A body larger than the buffer stops the parser with need_buffer, as Beast's buffer_body does.
  rest::HttpHead small_head;
  rest::HeadParser<true> small(small_head);
  const std::string long_body = "PUT /y HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
  char two[2];
  small.body().data = two;
  small.body().size = sizeof(two);
  size_t used = 0;
  while (!small.is_header_done() && !ec) {
    used += small.put(boost::asio::buffer(long_body.data() + used, long_body.size() - used), ec);
  }
  used += small.put(boost::asio::buffer(long_body.data() + used, long_body.size() - used), ec);
  EXPECT_EQ(ec, boost::beast::http::error::need_buffer);
  EXPECT_EQ(std::string(two, 2), "01");
  EXPECT_EQ(small.body().size, 0u);
  EXPECT_EQ(used, long_body.size() - 8);

  rest::HttpHead answer_head;  // an answer without trailers, its reason as sent
  rest::HeadParser<false> plain(answer_head);
  const std::string answer = "HTTP/1.0 201 Made It\r\nContent-Length: 0\r\n\r\n";
  ec = {};
  ParseAll(plain, answer, ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(plain.is_done());
  EXPECT_FALSE(answer_head.has_trailers);
  EXPECT_EQ(answer_head.status, 201u);
  EXPECT_EQ(answer_head.reason, "Made It");
  EXPECT_EQ(answer_head.version, 10u);
}

// HeaderFields' edits are Beast's: Set erases every field of the name (any case) and appends one,
// Erase takes them all, the order of the rest stays.
TEST(RestHttpTest, HeaderFieldsEditLikeBeastsFields) {
  rest::HeaderFields ours;
  boost::beast::http::fields beasts;
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"Host", "a"},
                                                        {"api-key", "app"},
                                                        {"Accept", "*/*"},
                                                        {"API-Key", "second"},
                                                        {"X-Custom", "1"}}) {
    ours.Add(name, value);
    beasts.insert(name, value);
  }
  ours.Set("api-key", "mine");
  beasts.set("api-key", "mine");
  ours.Erase(boost::beast::http::field::accept);
  beasts.erase(boost::beast::http::field::accept);
  ours.Set(boost::beast::http::field::content_length, "7");
  beasts.set(boost::beast::http::field::content_length, "7");
  ours.Erase("x-custom");
  beasts.erase("x-custom");
  std::string ours_text;
  ours.AppendTo(ours_text);
  std::string beasts_text;
  for (const auto& field : beasts) {
    beasts_text += std::string(field.name_string()) + ": " + std::string(field.value()) + "\r\n";
  }
  beasts_text += "\r\n";
  EXPECT_EQ(ours_text, beasts_text);
  EXPECT_EQ(ours_text, "Host: a\r\napi-key: mine\r\nContent-Length: 7\r\n\r\n");
  EXPECT_EQ(ours.size(), 3u);
  std::string without_host;
  ours.AppendTo(without_host, /*skip_host=*/true);
  EXPECT_EQ(without_host, "api-key: mine\r\nContent-Length: 7\r\n\r\n");
  for (int i = 0; i < 50; i++) {  // a value viewing the fields' own text, while that text grows
    ours.Set(absl::StrCat("X-Copy-", i), *ours.Get("api-key"));
  }
  EXPECT_EQ(ours.Get("X-Copy-49"), "mine");
  rest::HeaderFields copy = ours;  // a copy has its own text
  rest::HeaderFields moved = std::move(ours);
  EXPECT_EQ(moved.Get("X-Copy-49"), "mine");
  EXPECT_TRUE(ours.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty and usable
  ours.Add("Host", "b");
  EXPECT_EQ(ours.Get("host"), "b");
  copy.Set("api-key", "changed");
  EXPECT_EQ(moved.Get("api-key"), "mine");
  ours = moved;
  ours.Clear();
  EXPECT_TRUE(ours.empty());
  EXPECT_EQ(ours.Get("Host"), std::nullopt);
}

// HttpHead's keep-alive, chunked and length edits give what Beast's message gives.
TEST(RestHttpTest, FieldTextCopiesIntoItsOwnBufferAndMovesOutEmpty) {
  rest::FieldText text;
  EXPECT_EQ(text.size(), 0u);
  std::memcpy(text.Grow(5), "hello", 5);
  std::memcpy(text.Grow(2000), std::string(2000, 'x').data(), 2000);  // reallocates, keeps
  ASSERT_EQ(text.size(), 2005u);
  EXPECT_EQ(std::string_view(text.data(), 5), "hello");
  EXPECT_TRUE(text.Contains(std::string_view(text.data() + 3, 2)));
  EXPECT_FALSE(text.Contains(std::string_view("hello")));
  EXPECT_FALSE(text.Contains(std::string_view()));

  rest::FieldText copy;
  std::memcpy(copy.Grow(3), "old", 3);
  copy = text;
  ASSERT_EQ(copy.size(), text.size());
  EXPECT_NE(copy.data(), text.data());  // its own buffer
  EXPECT_EQ(std::string_view(copy.data(), copy.size()), std::string_view(text.data(), 2005));

  const char* bytes = text.data();
  rest::FieldText moved(std::move(text));
  EXPECT_EQ(moved.data(), bytes);  // the buffer itself moved
  EXPECT_EQ(moved.size(), 2005u);
  EXPECT_EQ(text.size(), 0u);  // NOLINT(bugprone-use-after-move): empty and usable
  std::memcpy(text.Grow(2), "ok", 2);
  EXPECT_EQ(std::string_view(text.data(), text.size()), "ok");

  moved.Clear();
  EXPECT_EQ(moved.size(), 0u);
  EXPECT_EQ(moved.Grow(4), bytes);  // cleared, not freed: the memory is reused
}

TEST(RestHttpTest, HttpHeadFramingMatchesBeastsMessage) {
  for (const unsigned version : {10u, 11u}) {
    for (const char* connection : {"", "close", "keep-alive", "Upgrade, close", "x-hop"}) {
      for (const bool keep_alive : {false, true}) {
        rest::HttpHead ours;
        ours.version = version;
        boost::beast::http::response<boost::beast::http::empty_body> beasts;
        beasts.version(version);
        ours.fields.Add("Content-Type", "text/plain");
        beasts.insert("Content-Type", "text/plain");
        if (*connection != '\0') {
          ours.fields.Add("Connection", connection);
          beasts.insert("Connection", connection);
        }
        EXPECT_EQ(ours.KeepAlive(), beasts.keep_alive()) << version << " " << connection;
        ours.SetKeepAlive(keep_alive);
        beasts.keep_alive(keep_alive);
        EXPECT_EQ(ours.fields.Get("Connection").value_or("(none)"),
                  beasts.count("Connection") != 0 ? std::string(beasts["Connection"]) : "(none)")
            << version << " " << connection << " " << keep_alive;
      }
    }
  }
  rest::HttpHead ours;
  boost::beast::http::request<boost::beast::http::empty_body> beasts;
  ours.fields.Add("Content-Length", "5");
  beasts.insert("Content-Length", "5");
  EXPECT_FALSE(ours.Chunked());
  ours.SetChunked();
  beasts.chunked(true);
  EXPECT_TRUE(ours.Chunked());
  EXPECT_EQ(ours.fields.Count("Content-Length"), 0u);
  EXPECT_EQ(beasts.count("Content-Length"), 0u);
  EXPECT_EQ(ours.fields.Get("Transfer-Encoding"), "chunked");
  ours.fields.Erase("Transfer-Encoding");
  ours.fields.Add("Content-Length", "1");
  ours.fields.Add("Content-Length", "1");
  ours.SetContentLength(1234567890123);
  EXPECT_EQ(ours.fields.Count("Content-Length"), 1u);
  EXPECT_EQ(ours.fields.Get("content-length"), "1234567890123");
  ours.SetContentLength(0);
  EXPECT_EQ(ours.fields.Get("content-length"), "0");
  rest::HttpHead te;
  te.fields.Add("Transfer-Encoding", "chunked, gzip");  // chunked is not the last coding
  EXPECT_FALSE(te.Chunked());
}

// AppendLastChunk writes what Beast's make_chunk_last writes for the same trailer fields.
TEST(RestHttpTest, LastChunkMatchesBeastsChunkLast) {
  rest::HeaderFields trailers;
  boost::beast::http::fields beast_trailers;
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"X-Checksum", "abc123"}, {"x-lower", "a, b"}, {"X-Checksum", "second"}}) {
    trailers.Add(name, value);
    beast_trailers.insert(name, value);
  }
  std::string ours = "keep:";
  rest::AppendLastChunk(trailers, ours);
  std::string beasts = "keep:";
  for (auto buffer :
       boost::beast::buffers_range(boost::beast::http::make_chunk_last(beast_trailers))) {
    beasts.append(static_cast<const char*>(buffer.data()), buffer.size());
  }
  // Beast's fields group same-named ones; ours keep the order they came in (as the bytes
  // went, which is what an HTTP peer reads): the same lines.
  EXPECT_EQ(ours, "keep:0\r\nX-Checksum: abc123\r\nx-lower: a, b\r\nX-Checksum: second\r\n\r\n");
  EXPECT_EQ(beasts, "keep:0\r\nX-Checksum: abc123\r\nX-Checksum: second\r\nx-lower: a, b\r\n\r\n");

  std::string none;
  rest::AppendLastChunk(rest::HeaderFields(), none);
  EXPECT_EQ(none, "0\r\n\r\n");

  std::string header;
  rest::AppendChunkHeader(1, header);
  rest::AppendChunkHeader(0xabc, header);
  rest::AppendChunkHeader(65536, header);
  EXPECT_EQ(header, "1\r\nabc\r\n10000\r\n");
}

// SerializeRequestHead and SerializeResponseHead write what Beast's serializer writes for the
// same head (ToBeastRequest / ToBeastResponse of it), byte for byte.
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

template <bool kIsRequest>
rest::HttpHead Parsed(const std::string& wire, rest::HttpHead& head) {
  rest::HeadParser<kIsRequest> parser(head);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(wire), ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(parser.is_header_done());
  return head;
}

TEST(RestHttpTest, SerializeHeadMatchesBeastsSerializer) {
  rest::HttpHead request;
  Parsed<true>(
      "POST /collections/c/points/search?timeout=3 HTTP/1.1\r\nHost: 127.0.0.1:6333\r\n"
      "Content-Type: application/json\r\nX-Custom: a, b\r\nContent-Length: 42\r\n\r\n",
      request);
  std::string head = "leftover";
  rest::SerializeRequestHead(request, head);
  EXPECT_EQ(head, BeastHead(rest::ToBeastRequest(request)));
  EXPECT_EQ(head.substr(0, head.find("\r\n") + 2),
            "POST /collections/c/points/search?timeout=3 HTTP/1.1\r\n");

  // After edits (an erased field in the middle, one appended).
  request.fields.Erase("Content-Type");
  request.fields.Set(std::string_view("api-key"), "k");
  rest::SerializeRequestHead(request, head);
  EXPECT_EQ(head, BeastHead(rest::ToBeastRequest(request)));
  EXPECT_EQ(head,
            "POST /collections/c/points/search?timeout=3 HTTP/1.1\r\nHost: 127.0.0.1:6333\r\n"
            "X-Custom: a, b\r\nContent-Length: 42\r\napi-key: k\r\n\r\n");

  // The Host of the node, in place of the app's.
  rest::SerializeRequestHead(request, head, "10.0.0.7:6333");
  EXPECT_EQ(head.find("Host: 127.0.0.1:6333"), std::string::npos);
  EXPECT_EQ(head.substr(0, head.find("X-Custom")),
            "POST /collections/c/points/search?timeout=3 HTTP/1.1\r\nHost: 10.0.0.7:6333\r\n");
  rest::HttpHead moved = request;
  moved.fields.Set(boost::beast::http::field::host, "10.0.0.7:6333");
  EXPECT_EQ(head.size(), BeastHead(rest::ToBeastRequest(moved)).size());  // Host moved first

  rest::HttpHead brew;  // a method Beast has no enum for
  Parsed<true>("BREW /x HTTP/1.0\r\nA: b\r\n\r\n", brew);
  EXPECT_EQ(brew.method, boost::beast::http::verb::unknown);
  rest::SerializeRequestHead(brew, head);
  EXPECT_EQ(head, BeastHead(rest::ToBeastRequest(brew)));
  EXPECT_EQ(head, "BREW /x HTTP/1.0\r\nA: b\r\n\r\n");

  rest::HttpHead response;
  Parsed<false>("HTTP/1.0 200 Fine\r\ncontent-type: application/json\r\nContent-Length: 7\r\n\r\n",
                response);
  rest::SerializeResponseHead(response, head);
  EXPECT_EQ(head, BeastHead(rest::ToBeastResponse(response)));
  EXPECT_EQ(head.substr(0, head.find("\r\n") + 2), "HTTP/1.0 200 Fine\r\n");
  response.version = 11;
  response.SetKeepAlive(false);
  rest::SerializeResponseHead(response, head);
  EXPECT_EQ(head, BeastHead(rest::ToBeastResponse(response)));

  rest::HttpHead bare;  // no reason: the standard one
  Parsed<false>("HTTP/1.1 404 \r\n\r\n", bare);
  rest::SerializeResponseHead(bare, head);
  EXPECT_EQ(head, BeastHead(rest::ToBeastResponse(bare)));
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
