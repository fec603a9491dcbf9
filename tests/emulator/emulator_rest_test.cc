// qdrant-emulator's REST front over real sockets (Boost.Beast clients): keep-alive, chunked,
// gzip and 100-continue request bodies, one store shared with the gRPC front, the fault knobs and
// counters applied to REST calls, API keys, limits and bad input, connection accounting.
#include <zlib.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "emulator/rest_json.h"
#include "emulator/rest_server.h"
#include "emulator/server.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "qdrant/collections_service.grpc.pb.h"
#include "qdrant/points_service.grpc.pb.h"
#include "tests/support/test_util.h"

namespace qpool::emulator {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using ::testing::HasSubstr;

constexpr auto kIoTimeout = std::chrono::seconds(10);

using ::qpool::testing::WaitFor;

uint16_t PortOf(const std::string& address) {
  int port = 0;
  (void)absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port);
  return static_cast<uint16_t>(port);
}

struct Answer {
  int status = 0;  // 0: no answer (the connection closed or failed)
  std::string body;
  std::string content_encoding;
  std::string retry_after;
  bool keep_alive = false;
  Json json() const { return Json::parse(body, nullptr, false); }
};

// One keep-alive client connection to the REST port. Every operation is asynchronous and run to
// completion on the client's own io_context, so that the stream's deadline (kIoTimeout) applies
// (beast::tcp_stream's timeouts do not apply to its synchronous operations).
class Client {
 public:
  // `receive_buffer`: the socket's receive buffer, when > 0 (a small one makes the server's write
  // of a large answer wait for this client to read).
  explicit Client(const std::string& address, int receive_buffer = 0) : stream_(io_) {
    beast::error_code ec;
    if (receive_buffer > 0) {
      stream_.socket().open(tcp::v4(), ec);
      stream_.socket().set_option(asio::socket_base::receive_buffer_size(receive_buffer), ec);
    }
    stream_.expires_after(kIoTimeout);
    stream_.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), PortOf(address)),
                          [&](beast::error_code e) { ec = e; });
    Run();
    EXPECT_FALSE(ec) << ec.message();
  }

  Answer Send(http::verb method, const std::string& target, const std::string& body = "",
              const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    http::request<http::string_body> request(method, target, 11);
    request.set(http::field::host, "127.0.0.1");
    for (const auto& [name, value] : headers) request.set(name, value);
    if (!body.empty()) request.set(http::field::content_type, "application/json");
    request.body() = body;
    request.prepare_payload();
    beast::error_code ec;
    stream_.expires_after(kIoTimeout);
    http::async_write(stream_, request, [&](beast::error_code e, size_t) { ec = e; });
    Run();
    if (ec) return {};
    return Read();
  }

  // Writes raw bytes (a hand-made request, or garbage).
  void Write(const std::string& bytes) {
    stream_.expires_after(kIoTimeout);
    asio::async_write(stream_, asio::buffer(bytes), [](beast::error_code, size_t) {});
    Run();
  }

  Answer Read() {
    http::response<http::string_body> response;
    beast::error_code ec;
    stream_.expires_after(kIoTimeout);
    http::async_read(stream_, buffer_, response, [&](beast::error_code e, size_t) { ec = e; });
    Run();
    if (ec) return {};
    Answer answer;
    answer.status = static_cast<int>(response.result_int());
    answer.body = response.body();
    answer.retry_after = std::string(response[http::field::retry_after]);
    answer.content_encoding = std::string(response[http::field::content_encoding]);
    answer.keep_alive = response.keep_alive();
    return answer;
  }

  // Reads up to and including "\r\n\r\n" (an interim 100 Continue).
  std::string ReadHead() {
    for (;;) {
      std::string data = beast::buffers_to_string(buffer_.data());
      if (size_t end = data.find("\r\n\r\n"); end != std::string::npos) {
        buffer_.consume(end + 4);
        return data.substr(0, end + 4);
      }
      beast::error_code ec;
      size_t n = 0;
      stream_.expires_after(kIoTimeout);
      stream_.async_read_some(buffer_.prepare(4096), [&](beast::error_code e, size_t bytes) {
        ec = e;
        n = bytes;
      });
      Run();
      if (ec) return "";
      buffer_.commit(n);
    }
  }

  // Whether the server has closed the connection (EOF or reset) within the timeout.
  bool ClosedByPeer() {
    char byte;
    beast::error_code ec;
    stream_.expires_after(kIoTimeout);
    stream_.async_read_some(asio::buffer(&byte, 1), [&](beast::error_code e, size_t) { ec = e; });
    Run();
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

 private:
  void Run() {
    io_.restart();
    io_.run();
  }

  asio::io_context io_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

std::string Gzip(const std::string& text) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::string out(deflateBound(&zs, text.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = text.size();
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = out.size();
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

constexpr char kCreate[] = R"({"vectors":{"size":2,"distance":"Dot"}})";
constexpr char kPoints[] =
    R"({"points":[{"id":1,"vector":[1,0],"payload":{"k":"a"}},{"id":2,"vector":[0,1]}]})";

class EmulatorRestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions grpc_options;
    grpc_options.listen = "127.0.0.1:0";
    auto grpc = EmulatorServer::Start(grpc_options, storage_, faults_);
    ASSERT_TRUE(grpc.ok()) << grpc.status();
    grpc_ = *std::move(grpc);
    StartRest(RestServerOptions());
  }

  void StartRest(RestServerOptions options) {
    rest_.reset();
    options.listen = "127.0.0.1:0";
    auto rest = RestServer::Start(options, storage_, HandlerOptions{}, faults_);
    ASSERT_TRUE(rest.ok()) << rest.status();
    rest_ = *std::move(rest);
  }

  Answer Once(http::verb method, const std::string& target, const std::string& body = "") {
    Client client(rest_->address());
    return client.Send(method, target, body);
  }

  void CreateCollection(const std::string& name = "c") {
    ASSERT_EQ(Once(http::verb::put, "/collections/" + name, kCreate).status, 200);
    ASSERT_EQ(Once(http::verb::put, "/collections/" + name + "/points?wait=true", kPoints).status,
              200);
  }

  uint32_t Calls(const std::string& method) {
    auto counters = faults_.counters();
    auto it = counters.calls().find(method);
    return it == counters.calls().end() ? 0 : it->second;
  }

  Storage storage_;
  FaultInjector faults_{1};
  std::unique_ptr<EmulatorServer> grpc_;
  std::unique_ptr<RestServer> rest_;
};

TEST_F(EmulatorRestTest, KeepAliveServesManyRequestsOnOneConnection) {
  Client client(rest_->address());
  for (int i = 0; i < 3; ++i) {
    Answer answer = client.Send(http::verb::get, "/collections");
    EXPECT_EQ(answer.status, 200);
    EXPECT_TRUE(answer.keep_alive);
    EXPECT_EQ(answer.json()["status"], "ok");
  }
  Counters counters = faults_.counters();
  EXPECT_EQ(counters.rest_connections_accepted(), 1u);
  EXPECT_EQ(counters.rest_requests(), 3u);
  EXPECT_EQ(Calls("qdrant.Collections/List"), 3u);
}

TEST_F(EmulatorRestTest, PipelinedRequestsAreAnsweredInOrder) {
  Client client(rest_->address());
  client.Write(
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(client.Read().body, "healthz check passed");
  EXPECT_EQ(client.Read().body, "livez check passed");
  Answer last = client.Read();
  EXPECT_EQ(last.body, "all shards are ready");
  EXPECT_FALSE(last.keep_alive);
  EXPECT_TRUE(client.ClosedByPeer());
}

TEST_F(EmulatorRestTest, GrpcAndRestShareOneStore) {
  auto channel = grpc::CreateChannel(grpc_->address(), grpc::InsecureChannelCredentials());
  auto collections = qdrant::Collections::NewStub(channel);
  auto points = qdrant::Points::NewStub(channel);
  {
    grpc::ClientContext context;
    qdrant::CreateCollection request;
    request.set_collection_name("from_grpc");
    request.mutable_vectors_config()->mutable_params()->set_size(2);
    request.mutable_vectors_config()->mutable_params()->set_distance(qdrant::Dot);
    qdrant::CollectionOperationResponse reply;
    ASSERT_TRUE(collections->Create(&context, request, &reply).ok());
  }
  Answer info = Once(http::verb::get, "/collections/from_grpc");
  ASSERT_EQ(info.status, 200) << info.body;
  EXPECT_EQ(info.json()["result"]["config"]["params"]["vectors"]["size"], 2);
  ASSERT_EQ(Once(http::verb::put, "/collections/from_grpc/points?wait=true", kPoints).status, 200);
  grpc::ClientContext context;
  qdrant::CountPoints count;
  count.set_collection_name("from_grpc");
  qdrant::CountResponse reply;
  ASSERT_TRUE(points->Count(&context, count, &reply).ok());
  EXPECT_EQ(reply.result().count(), 2u);
  // Writes from both fronts land in the same per-collection counter.
  EXPECT_EQ(faults_.counters().writes().at("from_grpc"), 2u);
}

TEST_F(EmulatorRestTest, ChunkedRequestBody) {
  CreateCollection();
  Client client(rest_->address());
  std::string body = R"({"filter":{"must":[{"key":"k","match":{"value":"a"}}]}})";
  client.Write(absl::StrCat(
      "POST /collections/c/points/count HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n",
      absl::Hex(10), "\r\n", body.substr(0, 10), "\r\n", absl::Hex(body.size() - 10), "\r\n",
      body.substr(10), "\r\n0\r\n\r\n"));
  Answer answer = client.Read();
  ASSERT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(answer.json()["result"]["count"], 1);
}

TEST_F(EmulatorRestTest, GzipRequestBodyIsInflated) {
  ASSERT_EQ(Once(http::verb::put, "/collections/c", kCreate).status, 200);
  Client client(rest_->address());
  Answer upsert = client.Send(http::verb::put, "/collections/c/points?wait=true", Gzip(kPoints),
                              {{"Content-Encoding", "gzip"}});
  ASSERT_EQ(upsert.status, 200) << upsert.body;
  EXPECT_EQ(
      client.Send(http::verb::post, "/collections/c/points/count", "{}").json()["result"]["count"],
      2);
  Answer corrupt = client.Send(http::verb::post, "/collections/c/points/count", "not gzip",
                               {{"Content-Encoding", "gzip"}});
  EXPECT_EQ(corrupt.status, 400);
  EXPECT_THAT(corrupt.body, HasSubstr("cannot inflate"));
  Answer brotli = client.Send(http::verb::post, "/collections/c/points/count", "{}",
                              {{"Content-Encoding", "br"}});
  EXPECT_EQ(brotli.status, 415);
}

std::string Gunzip(const std::string& compressed) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  std::string out(1 << 20, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  zs.avail_in = compressed.size();
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = out.size();
  EXPECT_EQ(inflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  inflateEnd(&zs);
  return out;
}

TEST_F(EmulatorRestTest, AnswersAreGzippedWhenTheClientAcceptsGzip) {
  CreateCollection();
  Client client(rest_->address());
  std::string body = R"({"limit":10,"with_payload":true})";
  Answer plain = client.Send(http::verb::post, "/collections/c/points/scroll", body);
  EXPECT_TRUE(plain.content_encoding.empty());
  Answer gzipped = client.Send(http::verb::post, "/collections/c/points/scroll", body,
                               {{"Accept-Encoding", "deflate, gzip;q=0.5"}});
  EXPECT_EQ(gzipped.content_encoding, "gzip");
  Json json = Json::parse(Gunzip(gzipped.body));
  EXPECT_EQ(json["result"], Json::parse(plain.body)["result"]);
  Answer refused = client.Send(http::verb::post, "/collections/c/points/scroll", body,
                               {{"Accept-Encoding", "gzip;q=0, identity"}});
  EXPECT_TRUE(refused.content_encoding.empty());
  RestServerOptions options;
  options.gzip_answers = false;
  StartRest(options);
  Client off(rest_->address());
  EXPECT_TRUE(off.Send(http::verb::get, "/collections", "", {{"Accept-Encoding", "gzip"}})
                  .content_encoding.empty());
}

TEST_F(EmulatorRestTest, ExpectContinueGetsAnInterimAnswer) {
  ASSERT_EQ(Once(http::verb::put, "/collections/c", kCreate).status, 200);
  Client client(rest_->address());
  std::string body = kPoints;
  client.Write(absl::StrCat("PUT /collections/c/points?wait=true HTTP/1.1\r\nHost: x\r\n",
                            "Content-Type: application/json\r\nExpect: 100-continue\r\n",
                            "Content-Length: ", body.size(), "\r\n\r\n"));
  EXPECT_THAT(client.ReadHead(), HasSubstr("100 Continue"));
  client.Write(body);
  Answer answer = client.Read();
  EXPECT_EQ(answer.status, 200) << answer.body;
}

TEST_F(EmulatorRestTest, InjectedUnavailableIs503AndCountsAsTheGrpcMethod) {
  CreateCollection();
  ASSERT_TRUE(faults_.SetConfigJson(R"({"methods":{"Count":{"error_rate":1}}})").ok());
  faults_.ResetCounters();
  Answer answer = Once(http::verb::post, "/collections/c/points/count", "{}");
  EXPECT_EQ(answer.status, 503);
  EXPECT_EQ(answer.json()["status"]["error"], "qdrant-emulator: injected fault");
  EXPECT_EQ(Calls("qdrant.Points/Count"), 1u);
  EXPECT_EQ(faults_.counters().injected_errors(), 1u);
}

TEST_F(EmulatorRestTest, InjectedResourceExhaustedIs429WithRetryAfter) {
  CreateCollection();
  ASSERT_TRUE(faults_
                  .SetConfigJson(R"({"methods":{"qdrant.Points/Query":{"error_rate":1,
                     "error_code":"RESOURCE_EXHAUSTED","retry_after_s":2}}})")
                  .ok());
  Answer answer = Once(http::verb::post, "/collections/c/points/query", "{}");
  EXPECT_EQ(answer.status, 429);
  EXPECT_EQ(answer.retry_after, "2");
}

TEST_F(EmulatorRestTest, ErrorAfterHandlerAppliesTheWrite) {
  ASSERT_EQ(Once(http::verb::put, "/collections/c", kCreate).status, 200);
  ASSERT_TRUE(
      faults_.SetConfigJson(R"({"methods":{"Delete":{"error_rate":1,"error_phase":"after"}}})")
          .ok());
  ASSERT_EQ(Once(http::verb::put, "/collections/c/points?wait=true", kPoints).status, 200);
  faults_.ResetCounters();
  Answer answer = Once(http::verb::post, "/collections/c/points/delete?wait=true",
                       R"({"filter":{"must":[{"key":"k","match":{"value":"a"}}]}})");
  EXPECT_EQ(answer.status, 503);
  EXPECT_EQ(Calls("qdrant.Points/Delete"), 1u);
  EXPECT_EQ(faults_.counters().writes().at("c"), 1u);
  EXPECT_EQ(Once(http::verb::post, "/collections/c/points/count", "{}").json()["result"]["count"],
            1);
}

TEST_F(EmulatorRestTest, LatencyDelaysTheAnswer) {
  CreateCollection();
  ASSERT_TRUE(faults_.SetConfigJson(R"({"methods":{"Scroll":{"latency_ms":150}}})").ok());
  absl::Time start = absl::Now();
  Answer answer = Once(http::verb::post, "/collections/c/points/scroll", "{}");
  EXPECT_EQ(answer.status, 200);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(150));
}

TEST_F(EmulatorRestTest, HangParksUntilTheRuleIsLifted) {
  CreateCollection();
  ASSERT_TRUE(faults_.SetConfigJson(R"({"methods":{"Count":{"hang":true}}})").ok());
  faults_.ResetCounters();
  auto pending = std::async(std::launch::async, [&] {
    return Once(http::verb::post, "/collections/c/points/count", "{}");
  });
  ASSERT_TRUE(WaitFor([&] { return faults_.counters().hung_calls() == 1; }, absl::Seconds(10)));
  EXPECT_EQ(pending.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  ASSERT_TRUE(faults_.SetConfigJson("{}").ok());
  rest_->ReleaseParkedCalls();
  Answer answer = pending.get();
  EXPECT_EQ(answer.status, 200);
  EXPECT_EQ(answer.json()["result"]["count"], 2);
}

TEST_F(EmulatorRestTest, ParkedRequestsAre503OnShutdown) {
  faults_.SetHangAll(true);
  auto pending =
      std::async(std::launch::async, [&] { return Once(http::verb::get, "/collections"); });
  ASSERT_TRUE(WaitFor([&] { return faults_.counters().hung_calls() == 1; }, absl::Seconds(10)));
  rest_->Shutdown();
  EXPECT_EQ(pending.get().status, 503);
  faults_.SetHangAll(false);
}

TEST_F(EmulatorRestTest, ApiKeyGuardsAllButTheVersionAndProbes) {
  RestServerOptions options;
  options.api_key = "secret";
  StartRest(options);
  Client client(rest_->address());
  EXPECT_EQ(client.Send(http::verb::get, "/").status, 200);
  EXPECT_EQ(client.Send(http::verb::get, "/readyz").status, 200);
  Answer refused = client.Send(http::verb::get, "/collections");
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.json()["status"]["error"],
            "Must provide an API key or an Authorization bearer token");
  EXPECT_EQ(client.Send(http::verb::get, "/collections", "", {{"api-key", "wrong"}}).status, 401);
  EXPECT_EQ(client.Send(http::verb::get, "/collections", "", {{"api-key", "secret"}}).status, 200);
  EXPECT_EQ(
      client.Send(http::verb::get, "/collections", "", {{"Authorization", "Bearer secret"}}).status,
      200);
  EXPECT_EQ(Calls("qdrant.Collections/List"), 2u);  // Refused requests are not calls.
}

TEST_F(EmulatorRestTest, OversizeBodyIs413AndClosesTheConnection) {
  RestServerOptions options;
  options.max_body_bytes = 1024;
  StartRest(options);
  ASSERT_EQ(Once(http::verb::put, "/collections/c", kCreate).status, 200);
  Client client(rest_->address());
  Answer answer =
      client.Send(http::verb::post, "/collections/c/points/count", std::string(4096, ' '));
  EXPECT_EQ(answer.status, 413);
  EXPECT_THAT(answer.body, HasSubstr("1024"));
  EXPECT_TRUE(client.ClosedByPeer());
  // A small gzip body that inflates beyond the limit: 413 too.
  Client bomb(rest_->address());
  Answer inflated = bomb.Send(http::verb::post, "/collections/c/points/count",
                              Gzip(std::string(64 << 10, ' ')), {{"Content-Encoding", "gzip"}});
  EXPECT_EQ(inflated.status, 413);
}

TEST_F(EmulatorRestTest, OversizeHeadersAre431) {
  Client client(rest_->address());
  std::string request = "GET /collections HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 10; ++i) {
    absl::StrAppend(&request, "X-Big-", i, ": ", std::string(8 << 10, 'x'), "\r\n");
  }
  client.Write(request + "\r\n");  // 80 KiB of headers; the limit is 64 KiB.
  EXPECT_EQ(client.Read().status, 431);
  EXPECT_TRUE(client.ClosedByPeer());
}

TEST_F(EmulatorRestTest, GarbageAndHttp2PrefaceCostOnlyThatConnection) {
  Client bystander(rest_->address());
  ASSERT_EQ(bystander.Send(http::verb::get, "/collections").status, 200);
  Client garbage(rest_->address());
  garbage.Write("\x16\x03\x01\x02\x05\x01 not http\r\n\r\n");  // TLS-like bytes.
  Answer answer = garbage.Read();
  EXPECT_EQ(answer.status, 400);
  EXPECT_TRUE(garbage.ClosedByPeer());
  Client h2(rest_->address());
  h2.Write(std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24));
  EXPECT_EQ(h2.Read().status, 400);
  EXPECT_TRUE(h2.ClosedByPeer());
  EXPECT_EQ(bystander.Send(http::verb::get, "/collections").status, 200);
}

TEST_F(EmulatorRestTest, UnknownRoutesAre404AndNotCountedAsCalls) {
  Answer answer = Once(http::verb::get, "/telemetry");
  EXPECT_EQ(answer.status, 404);
  EXPECT_THAT(answer.json()["status"]["error"].get<std::string>(), HasSubstr("no route"));
  Counters counters = faults_.counters();
  EXPECT_TRUE(counters.calls().empty());
  EXPECT_EQ(counters.rest_requests(), 1u);
}

TEST_F(EmulatorRestTest, ConnectionsAreCountedOpenPeakAndTotal) {
  {
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < 3; ++i) {
      clients.push_back(std::make_unique<Client>(rest_->address()));
      ASSERT_EQ(clients.back()->Send(http::verb::get, "/livez").status, 200);
    }
    Counters counters = faults_.counters();
    EXPECT_EQ(counters.rest_connections_open(), 3u);
    EXPECT_EQ(counters.rest_connections_peak(), 3u);
    EXPECT_EQ(counters.rest_connections_accepted(), 3u);
    EXPECT_EQ(counters.connections_accepted(), 0u);  // The gRPC port's count is separate.
  }
  ASSERT_TRUE(
      WaitFor([&] { return faults_.counters().rest_connections_open() == 0; }, absl::Seconds(10)));
  EXPECT_EQ(faults_.counters().rest_connections_peak(), 3u);
  faults_.ResetCounters();
  EXPECT_EQ(faults_.counters().rest_connections_peak(), 0u);
  EXPECT_EQ(faults_.counters().rest_connections_accepted(), 0u);
}

TEST_F(EmulatorRestTest, GoawayClosesIdleConnections) {
  Client client(rest_->address());
  ASSERT_EQ(client.Send(http::verb::get, "/collections").status, 200);
  rest_->CloseConnections(CloseMode::kGoaway);
  EXPECT_TRUE(client.ClosedByPeer());
  EXPECT_EQ(Once(http::verb::get, "/collections").status, 200);  // New connections are served.
}

// The race that hung this file under ASan (fixed in 66f8d34, made certain here): a goaway that
// comes while an answer is being written must close the connection once it is out. The answer
// is 6 MiB and the client reads none of it until after the goaway, so the server's write is
// still under way when the goaway runs (the call was counted, and it is answered in the same
// handler). Before the fix the connection went back to reading requests, and a client waiting
// for the close waited forever.
TEST_F(EmulatorRestTest, GoawayWhileAnAnswerIsWrittenClosesAfterIt) {
  ASSERT_EQ(Once(http::verb::put, "/collections/c", kCreate).status, 200);
  const std::string blob(6u << 20, 'x');  // more than the server's send buffer (4 MiB at most)
  ASSERT_EQ(Once(http::verb::put, "/collections/c/points?wait=true",
                 absl::StrCat(R"({"points":[{"id":1,"vector":[1,0],"payload":{"blob":")", blob,
                              R"("}}]})"))
                .status,
            200);
  faults_.ResetCounters();
  Client client(rest_->address(), /*receive_buffer=*/64 << 10);
  client.Write("GET /collections/c/points/1 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(WaitFor([&] { return faults_.counters().rest_requests() == 1; }, absl::Seconds(10)));
  rest_->CloseConnections(CloseMode::kGoaway);
  Answer answer = client.Read();
  EXPECT_EQ(answer.status, 200);
  EXPECT_TRUE(answer.keep_alive);  // the head went out before the goaway
  EXPECT_GT(answer.body.size(), blob.size());
  EXPECT_TRUE(client.ClosedByPeer());
}

TEST_F(EmulatorRestTest, CloseAfterCallsGoawayAnswersThenCloses) {
  ASSERT_TRUE(faults_.SetConfigJson(R"({"close_after_calls":2,"close_mode":"goaway"})").ok());
  Client client(rest_->address());
  Answer first = client.Send(http::verb::get, "/collections");
  EXPECT_TRUE(first.keep_alive);
  Answer second = client.Send(http::verb::get, "/collections");
  EXPECT_EQ(second.status, 200);
  EXPECT_FALSE(second.keep_alive);
  EXPECT_TRUE(client.ClosedByPeer());
}

TEST_F(EmulatorRestTest, CloseAfterCallsAbruptProcessesButDoesNotAnswer) {
  ASSERT_EQ(Once(http::verb::put, "/collections/c", kCreate).status, 200);
  ASSERT_TRUE(faults_.SetConfigJson(R"({"close_after_calls":1,"close_mode":"abrupt"})").ok());
  faults_.ResetCounters();
  Client client(rest_->address());
  Answer answer = client.Send(http::verb::put, "/collections/c/points?wait=true", kPoints);
  EXPECT_EQ(answer.status, 0);
  EXPECT_EQ(faults_.counters().writes().at("c"), 1u);
  // This connection, and the creating one if the emulator had not seen it go yet.
  EXPECT_GE(faults_.counters().abrupt_closes(), 1u);
  ASSERT_TRUE(faults_.SetConfigJson("{}").ok());
  EXPECT_EQ(Once(http::verb::post, "/collections/c/points/count", "{}").json()["result"]["count"],
            2);
}

TEST_F(EmulatorRestTest, AbruptCloseResetsEveryConnection) {
  Client a(rest_->address()), b(rest_->address());
  ASSERT_EQ(a.Send(http::verb::get, "/livez").status, 200);
  ASSERT_EQ(b.Send(http::verb::get, "/livez").status, 200);
  rest_->CloseConnections(CloseMode::kAbrupt);
  EXPECT_TRUE(a.ClosedByPeer());
  EXPECT_TRUE(b.ClosedByPeer());
  EXPECT_EQ(faults_.counters().abrupt_closes(), 2u);
}

TEST_F(EmulatorRestTest, IdleTimeoutClosesQuietConnections) {
  RestServerOptions options;
  options.idle_timeout = absl::Milliseconds(100);
  StartRest(options);
  Client client(rest_->address());
  ASSERT_EQ(client.Send(http::verb::get, "/livez").status, 200);
  EXPECT_TRUE(client.ClosedByPeer());
}

}  // namespace
}  // namespace qpool::emulator
