// The REST front door end to end, in process: Beast clients -> qpoold (server::Proxy with
// rest.listen on 127.0.0.1:0) -> the in-process Beast REST upstream (tests/support). Forwarding
// (methods, headers, hop-by-hop fields, bodies of both framings both ways, 100-continue,
// pipelining, Connection: close), the replay of a request a keep-alive connection lost before any
// answer, qpoold's own answers (limits, unreachable node, deadline), bad input that costs only its
// own connection, and the bound on upstream connections under 1,000 app connections.
#include <gtest/gtest.h>
#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "daemon/config/config.h"
#include "daemon/metrics/scrape.h"
#include "daemon/metrics/scrape_families.h"
#include "daemon/server/proxy.h"
#include "nlohmann/json.hpp"
#include "tests/support/raw_http_upstream.h"
#include "tests/support/rest_test_upstream.h"
#include "tests/support/test_certs.h"
#include "tests/support/test_util.h"

namespace qpool::testing {
namespace {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;

struct Reply {
  unsigned status = 0;
  http::fields headers;
  std::string body;
  bool keep_alive = false;
  bool ok = false;  // a complete answer arrived in time
  std::string error;
  std::string raw;  // the answer's bytes as they arrived
};

// A blocking HTTP/1.1 client on one connection; every wait is bounded by `timeout`.
class Client {
 public:
  explicit Client(uint16_t port) : socket_(io_) {
    boost::system::error_code ec;
    socket_.connect(tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port), ec);
    connected_ = !ec;
  }
  bool connected() const { return connected_; }

  bool Send(std::string_view bytes) {
    boost::system::error_code ec;
    boost::asio::write(socket_, boost::asio::buffer(bytes.data(), bytes.size()), ec);
    return !ec;
  }

  // Waits until the socket is readable (data or close); false after `timeout`.
  bool WaitReadable(absl::Duration timeout) {
    pollfd fd{socket_.native_handle(), POLLIN, 0};
    return ::poll(&fd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) > 0;
  }

  Reply Read(absl::Duration timeout = absl::Seconds(10), bool head = false) {
    Reply reply;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    if (head) parser.skip(true);
    parser.eager(true);
    const absl::Time deadline = absl::Now() + timeout;
    while (!parser.is_done()) {
      boost::system::error_code ec;
      if (buffer_.size() != 0) {
        const size_t used = parser.put(buffer_.data(), ec);
        const auto* bytes = static_cast<const char*>(buffer_.data().data());
        reply.raw.append(bytes, used);
        buffer_.consume(used);
        if (ec && ec != http::error::need_more) {
          reply.error = ec.message();
          return reply;
        }
        if (!ec && used != 0) continue;
      }
      if (!WaitReadable(deadline - absl::Now())) {
        reply.error = "timed out";
        return reply;
      }
      const size_t n = socket_.read_some(buffer_.prepare(65536), ec);
      buffer_.commit(n);
      if (ec == boost::asio::error::eof) {
        parser.put_eof(ec);  // an answer delimited by the close ends here
        if (ec) {
          reply.error = ec.message();
          return reply;
        }
        break;
      }
      if (ec) {
        reply.error = ec.message();
        return reply;
      }
    }
    reply.ok = true;
    reply.status = parser.get().result_int();
    reply.headers = parser.get().base();
    reply.body = parser.get().body();
    reply.keep_alive = parser.get().keep_alive();
    return reply;
  }

  // Raw bytes until what arrived ends with `suffix` (or `timeout`: what arrived so far). Reads the
  // socket directly: for answers read in parts, before any Read() on this connection.
  std::string ReadRawUntil(absl::string_view suffix, absl::Duration timeout = absl::Seconds(10)) {
    std::string raw;
    const absl::Time deadline = absl::Now() + timeout;
    char bytes[16384];
    while (!absl::EndsWith(raw, suffix) && WaitReadable(deadline - absl::Now())) {
      const ssize_t n = ::recv(socket_.native_handle(), bytes, sizeof(bytes), 0);
      if (n <= 0) break;
      raw.append(bytes, static_cast<size_t>(n));
    }
    return raw;
  }

  // True when the peer closes the connection within `timeout` (what it sent first is skipped).
  bool ClosedWithin(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    char scratch[4096];
    buffer_.clear();
    while (absl::Now() < deadline) {
      if (!WaitReadable(deadline - absl::Now())) return false;
      const ssize_t n = ::recv(socket_.native_handle(), scratch, sizeof(scratch), 0);
      if (n <= 0) return true;
    }
    return false;
  }

 private:
  boost::asio::io_context io_;
  tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
  bool connected_ = false;
};

std::string Request(const std::string& method, const std::string& target,
                    const std::string& body = "", const std::string& extra_headers = "") {
  std::string request =
      absl::StrCat(method, " ", target, " HTTP/1.1\r\nHost: qpool.test\r\n", extra_headers);
  if (!body.empty() || method == "POST" || method == "PUT") {
    absl::StrAppend(&request, "Content-Length: ", body.size(), "\r\n");
  }
  absl::StrAppend(&request, "\r\n", body);
  return request;
}

std::string Pattern(size_t size) {
  std::string text(size, 'a');
  for (size_t i = 0; i < size; ++i) text[i] = static_cast<char>('a' + (i * 7) % 26);
  return text;
}

// The status.error of a Qdrant-shaped error document; "" when the body is not one.
std::string ErrorOf(const std::string& body) {
  const auto json = nlohmann::json::parse(body, nullptr, false);
  if (json.is_discarded() || !json.contains("status") || !json["status"].is_object() ||
      !json["status"].contains("error") || !json.contains("time")) {
    return "";
  }
  return json["status"]["error"].get<std::string>();
}

double Sample(const std::vector<prometheus::MetricFamily>& families, const std::string& family,
              const std::map<std::string, std::string>& labels);

class RestForwardingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto upstream = RestTestUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = std::move(*upstream);
    StartProxy(nullptr);
  }
  void TearDown() override {
    if (proxy_ != nullptr) proxy_->ShutdownNow();
    proxy_.reset();
    if (upstream_ != nullptr) upstream_->Stop();
  }

  void StartProxy(const std::function<void(config::Config&)>& edit) {
    if (proxy_ != nullptr) proxy_->ShutdownNow();
    config::Config config;
    config.server.listen = {"127.0.0.1", 0};
    config.server.drain_timeout = absl::Seconds(1);
    config.rest.listen = {"127.0.0.1", 0};
    // The gRPC side is idle in these tests: no connection to its (absent) node.
    config.upstream.nodes = {{"127.0.0.1", 1}};
    config.upstream.min_connections = 0;
    config.upstream.rest_nodes = {{"127.0.0.1", upstream_->port()}};
    config.upstream.acquire_timeout = absl::Seconds(5);
    config.health.enabled = false;
    config.log.level = "warn";
    if (edit) edit(config);
    auto proxy = server::Proxy::Create(std::make_shared<const config::Config>(std::move(config)));
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = std::move(*proxy);
    const absl::Status started = proxy_->Start();
    ASSERT_TRUE(started.ok()) << started;
    ASSERT_NE(proxy_->rest_port(), 0);
    port_ = proxy_->rest_port();
  }

  std::unique_ptr<RestTestUpstream> upstream_;
  std::unique_ptr<server::Proxy> proxy_;
  uint16_t port_ = 0;
};

TEST_F(RestForwardingTest, ForwardsMethodTargetEndToEndHeadersAndBody) {
  Client client(port_);
  ASSERT_TRUE(client.connected());
  const std::string body = R"({"vector":[0.1,0.2],"limit":3})";
  ASSERT_TRUE(client.Send(Request("POST", "/collections/c/points/search?timeout=5", body,
                                  "api-key: secret\r\nAuthorization: Bearer t\r\n"
                                  "Content-Type: application/json\r\nContent-Encoding: identity\r\n"
                                  "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
                                  "Keep-Alive: timeout=5\r\nTE: trailers\r\n")));
  const Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(reply.body, body);
  EXPECT_EQ(reply.headers["x-seen-method"], "POST");
  EXPECT_EQ(reply.headers["x-seen-target"], "/collections/c/points/search?timeout=5");
  EXPECT_EQ(reply.headers["x-seen-api-key"], "secret");
  EXPECT_EQ(reply.headers["x-seen-authorization"], "Bearer t");
  EXPECT_EQ(reply.headers["x-seen-content-type"], "application/json");
  EXPECT_EQ(reply.headers["x-seen-content-encoding"], "identity");
  EXPECT_EQ(reply.headers["x-seen-host"], absl::StrCat("127.0.0.1:", upstream_->port()));
  // Hop-by-hop: not passed on, including the field Connection named.
  EXPECT_EQ(reply.headers.count("x-seen-x-hop"), 0u);
  EXPECT_EQ(reply.headers.count("x-seen-keep-alive"), 0u);
  // TE is hop-by-hop too; its "trailers" is said again to the node (qpoold forwards trailer
  // fields), with the TE connection option RFC 9110 asks for.
  EXPECT_EQ(reply.headers["x-seen-te"], "trailers");
  EXPECT_EQ(reply.headers["x-seen-connection"], "TE");
  EXPECT_TRUE(reply.keep_alive);

  // Other methods and an unknown path pass through on the same connection.
  for (const char* method : {"GET", "PUT", "DELETE", "PATCH"}) {
    ASSERT_TRUE(client.Send(
        Request(method, "/not/a/qdrant/route?x=1", method == std::string("GET") ? "" : "{}")));
    const Reply next = client.Read();
    ASSERT_TRUE(next.ok) << method << ": " << next.error;
    EXPECT_EQ(next.headers["x-seen-method"], method);
    EXPECT_EQ(next.headers["x-seen-target"], "/not/a/qdrant/route?x=1");
  }
}

TEST_F(RestForwardingTest, ChunkedBodiesBothWays) {
  Client client(port_);
  const std::string body = Pattern(200 * 1024);
  std::string request =
      "POST /collections/c/points/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (size_t at = 0; at < body.size(); at += 10000) {
    const std::string part = body.substr(at, 10000);
    absl::StrAppend(&request, absl::Hex(part.size()), "\r\n", part, "\r\n");
  }
  absl::StrAppend(&request, "0\r\n\r\n");
  ASSERT_TRUE(client.Send(request));
  Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(reply.body, body);
  EXPECT_EQ(reply.headers.count("x-seen-transfer-encoding") +
                reply.headers.count("x-seen-content-length"),
            1u);

  ASSERT_TRUE(client.Send(Request("GET", "/chunked?size=300000")));
  reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  ASSERT_EQ(reply.body.size(), 300000u);
  for (size_t i = 0; i < reply.body.size(); ++i) {
    ASSERT_EQ(reply.body[i], static_cast<char>('a' + i % 26)) << i;
  }
}

TEST_F(RestForwardingTest, BodiesLargerThanTheReplayBufferStreamThrough) {
  StartProxy([](config::Config& c) { c.retry.replay_buffer_per_call = 256 << 10; });
  Client client(port_);
  const std::string body = Pattern(6 << 20);
  ASSERT_TRUE(client.Send(Request("PUT", "/collections/c/points?wait=true", body)));
  Reply reply = client.Read(absl::Seconds(30));
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(reply.body.size(), body.size());
  EXPECT_TRUE(reply.body == body);
  // Chunked and larger than the replay buffer: streamed, chunked on to the upstream.
  std::string request =
      "PUT /collections/c/points HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
      "chunked\r\n\r\n";
  const std::string part = Pattern(100000);
  for (int i = 0; i < 10; ++i)
    absl::StrAppend(&request, absl::Hex(part.size()), "\r\n", part, "\r\n");
  absl::StrAppend(&request, "0\r\n\r\n");
  ASSERT_TRUE(client.Send(request));
  reply = client.Read(absl::Seconds(30));
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.body.size(), 10 * part.size());
  EXPECT_EQ(reply.headers["x-seen-transfer-encoding"], "chunked");
}

TEST_F(RestForwardingTest, ExpectContinueGetsA100BeforeTheBody) {
  Client client(port_);
  const std::string body = Pattern(1000);
  ASSERT_TRUE(
      client.Send(absl::StrCat("PUT /collections/c/points HTTP/1.1\r\nHost: x\r\n"
                               "Expect: 100-continue\r\nContent-Length: ",
                               body.size(), "\r\n\r\n")));
  Reply interim = client.Read();
  ASSERT_TRUE(interim.ok) << interim.error;
  EXPECT_EQ(interim.status, 100u);
  ASSERT_TRUE(client.Send(body));
  Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(reply.body, body);
  EXPECT_EQ(reply.headers.count("x-seen-expect"), 0u);
}

TEST_F(RestForwardingTest, PipelinedRequestsAnsweredInOrder) {
  Client client(port_);
  std::string batch;
  for (int i = 0; i < 5; ++i) {
    absl::StrAppend(&batch, Request("POST", absl::StrCat("/collections/c/points/count?n=", i),
                                    absl::StrCat("{\"n\":", i, "}")));
  }
  ASSERT_TRUE(client.Send(batch));
  for (int i = 0; i < 5; ++i) {
    const Reply reply = client.Read();
    ASSERT_TRUE(reply.ok) << i << ": " << reply.error;
    EXPECT_EQ(reply.body, absl::StrCat("{\"n\":", i, "}"));
  }
}

TEST_F(RestForwardingTest, ConnectionCloseIsHonoured) {
  Client client(port_);
  ASSERT_TRUE(client.Send(Request("GET", "/collections", "", "Connection: close\r\n")));
  const Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_FALSE(reply.keep_alive);
  EXPECT_TRUE(client.ClosedWithin(absl::Seconds(5)));
  // The upstream connection itself stays pooled: Connection is hop-by-hop.
  EXPECT_EQ(upstream_->requests(), 1);
  Client again(port_);
  ASSERT_TRUE(again.Send(Request("GET", "/collections")));
  ASSERT_TRUE(again.Read().ok);
  EXPECT_EQ(upstream_->connections_accepted(), 1);
}

TEST_F(RestForwardingTest, RequestLostOnAReusedConnectionBeforeAnyAnswerIsReplayed) {
  Client client(port_);
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  ASSERT_TRUE(client.Read().ok);
  // The pooled connection closes as the next request arrives, before any byte of the answer: a
  // search is replayed.
  upstream_->CloseNextReusedRequests(1);
  const std::string search = R"({"vector":[1,2],"limit":1})";
  ASSERT_TRUE(client.Send(Request("POST", "/collections/c/points/search", search)));
  Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(reply.body, search);
  EXPECT_EQ(upstream_->closed_unanswered(), 1);
  EXPECT_EQ(proxy_->stats().transparent_retries, 1u);

  // A delete by filter lost the same way is not: the connection was open when it was written (the
  // node read its headers), so the node may have run it. Passed on as 502, never sent again.
  upstream_->CloseNextReusedRequests(1);
  const int64_t answered = upstream_->requests();
  const std::string filter = R"({"filter":{"must":[]}})";
  ASSERT_TRUE(client.Send(Request("POST", "/collections/c/points/delete", filter)));
  reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 502u);
  EXPECT_NE(ErrorOf(reply.body).find("closed the connection before answering"), std::string::npos)
      << reply.body;
  EXPECT_EQ(upstream_->closed_unanswered(), 2);
  EXPECT_EQ(upstream_->requests(), answered);
  EXPECT_EQ(proxy_->stats().transparent_retries, 1u);
}

TEST_F(RestForwardingTest, RestOnlyWithoutGrpcNodes) {
  StartProxy([](config::Config& c) { c.upstream.nodes.clear(); });
  EXPECT_EQ(proxy_->port(), 0);  // no gRPC listener without a gRPC node
  Client client(port_);
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  const Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(reply.headers["x-seen-host"], absl::StrCat("127.0.0.1:", upstream_->port()));
  EXPECT_EQ(proxy_->NotReadyReason(), "");
}

TEST_F(RestForwardingTest, ReadAnswered503IsRetriedByPolicy) {
  Client client(port_);
  upstream_->FailNextRequests(1, 503);
  const std::string body = R"({"query":[0.1],"limit":1})";
  ASSERT_TRUE(client.Send(Request("POST", "/collections/c/points/query", body)));
  const Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(reply.body, body);
  EXPECT_EQ(upstream_->failed_on_purpose(), 1);
  EXPECT_EQ(upstream_->requests(), 2);
}

TEST_F(RestForwardingTest, IdDeleteIsRetriedFilterDeleteIsNot) {
  Client client(port_);
  upstream_->FailNextRequests(1, 503);
  ASSERT_TRUE(client.Send(
      Request("POST", "/collections/c/points/delete?wait=true", R"({"points":[1,2,3]})")));
  Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(upstream_->requests(), 2);

  // A filter delete reached Qdrant and failed: never sent again; Qdrant's own answer passes on.
  upstream_->FailNextRequests(1, 503);
  ASSERT_TRUE(client.Send(Request("POST", "/collections/c/points/delete?wait=true",
                                  R"({"filter":{"must":[{"key":"k","match":{"value":1}}]}})")));
  reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 503u);
  EXPECT_EQ(ErrorOf(reply.body), "failed on purpose");
  EXPECT_EQ(upstream_->requests(), 3);
  EXPECT_EQ(upstream_->failed_on_purpose(), 2);
}

TEST_F(RestForwardingTest, LimitsAnswered431And413WithTheirKeys) {
  StartProxy([](config::Config& c) {
    c.rest.max_header_bytes = 4096;
    c.rest.max_headers = 10;
    c.rest.max_body_bytes = 1000;
  });
  {
    Client client(port_);
    ASSERT_TRUE(client.Send(
        Request("GET", "/", "", absl::StrCat("X-Big: ", std::string(5000, 'x'), "\r\n"))));
    const Reply reply = client.Read();
    ASSERT_TRUE(reply.ok) << reply.error;
    EXPECT_EQ(reply.status, 431u);
    EXPECT_NE(ErrorOf(reply.body).find("rest.max_header_bytes"), std::string::npos) << reply.body;
    EXPECT_TRUE(client.ClosedWithin(absl::Seconds(5)));
  }
  {
    Client client(port_);
    std::string many;
    for (int i = 0; i < 20; ++i) absl::StrAppend(&many, "X-H", i, ": v\r\n");
    ASSERT_TRUE(client.Send(Request("GET", "/", "", many)));
    const Reply reply = client.Read();
    ASSERT_TRUE(reply.ok) << reply.error;
    EXPECT_EQ(reply.status, 431u);
    EXPECT_NE(ErrorOf(reply.body).find("rest.max_headers"), std::string::npos) << reply.body;
  }
  {
    Client client(port_);
    ASSERT_TRUE(client.Send(Request("PUT", "/collections/c/points", std::string(2000, 'x'))));
    const Reply reply = client.Read();
    ASSERT_TRUE(reply.ok) << reply.error;
    EXPECT_EQ(reply.status, 413u);
    EXPECT_NE(ErrorOf(reply.body).find("rest.max_body_bytes"), std::string::npos) << reply.body;
    EXPECT_TRUE(client.ClosedWithin(absl::Seconds(5)));
  }
  EXPECT_EQ(upstream_->requests(), 0);
}

TEST_F(RestForwardingTest, GarbageAndHttp2CostOnlyTheirOwnConnection) {
  Client good(port_);
  ASSERT_TRUE(good.Send(Request("GET", "/collections")));
  ASSERT_TRUE(good.Read().ok);

  Client garbage(port_);
  // A TLS ClientHello's first bytes, then garbage.
  constexpr char kTls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n";
  ASSERT_TRUE(garbage.Send(std::string(kTls, sizeof(kTls) - 1)));
  EXPECT_TRUE(garbage.ClosedWithin(absl::Seconds(5)));

  Client h2(port_);
  ASSERT_TRUE(h2.Send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
  const Reply h2_reply = h2.Read();
  ASSERT_TRUE(h2_reply.ok) << h2_reply.error;
  EXPECT_EQ(h2_reply.status, 400u);
  EXPECT_NE(ErrorOf(h2_reply.body).find("HTTP/1.1"), std::string::npos) << h2_reply.body;
  EXPECT_TRUE(h2.ClosedWithin(absl::Seconds(5)));

  // The other client is still served on its connection.
  ASSERT_TRUE(good.Send(Request("GET", "/collections")));
  const Reply reply = good.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_GE(proxy_->stats().protocol_errors, 2u);
}

TEST_F(RestForwardingTest, SlowHeadersCloseAtTheHeaderTimeout) {
  StartProxy([](config::Config& c) { c.rest.header_timeout = absl::Milliseconds(300); });
  Client slow(port_);
  ASSERT_TRUE(slow.Send("GET /collections HTTP/1.1\r\nHost: x\r\nX-Drip: "));
  const absl::Time start = absl::Now();
  EXPECT_TRUE(slow.ClosedWithin(absl::Seconds(5)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(upstream_->requests(), 0);
}

TEST_F(RestForwardingTest, UnreachableNodeIs503InQdrantsShape) {
  const uint16_t closed_port = PickFreePort();
  StartProxy([closed_port](config::Config& c) {
    c.upstream.rest_nodes = {{"127.0.0.1", closed_port}};
    c.upstream.acquire_timeout = absl::Milliseconds(300);
    c.retry.max_attempts = 2;
    c.retry.unreachable_wait = absl::Milliseconds(600);  // no ?timeout=: waited for this long
  });
  Client client(port_);
  const absl::Time start = absl::Now();
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  const Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(550));
  EXPECT_EQ(reply.status, 503u);
  EXPECT_NE(ErrorOf(reply.body).find("retry.unreachable_wait"), std::string::npos) << reply.body;
  EXPECT_FALSE(ErrorOf(reply.body).empty()) << reply.body;
  EXPECT_TRUE(reply.keep_alive);  // qpoold's own answer keeps the app's connection
  // The REST pool counts its failed connects (refused: reason connect), under the REST
  // endpoint's node label.
  EXPECT_GE(Sample(metrics::BuildFamilies(proxy_->Scrape(absl::Seconds(5))),
                   "qpool_upstream_connect_failures_total",
                   {{"node", absl::StrCat("127.0.0.1:", closed_port)}, {"reason", "connect"}}),
            1);
}

TEST_F(RestForwardingTest, DeadlineIs504) {
  StartProxy([](config::Config& c) { c.rest.request_timeout = absl::Milliseconds(200); });
  Client client(port_);
  ASSERT_TRUE(client.Send(Request("GET", "/slow?ms=3000")));
  const Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 504u);
  EXPECT_NE(ErrorOf(reply.body).find("rest.request_timeout"), std::string::npos) << reply.body;
  // The connection stays usable.
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  const Reply next = client.Read();
  ASSERT_TRUE(next.ok) << next.error;
  EXPECT_EQ(next.status, 200u);
}

TEST_F(RestForwardingTest, QueueFullIs429WithRetryAfter) {
  StartProxy([](config::Config& c) {
    c.rest.max_connections = 1;
    c.upstream.max_pending = 1;
  });
  Client busy(port_), waiting(port_), refused(port_);
  ASSERT_TRUE(busy.Send(Request("GET", "/slow?ms=1500")));
  ASSERT_TRUE(WaitFor([&] { return upstream_->open_connections() == 1; }, absl::Seconds(5)));
  ASSERT_TRUE(waiting.Send(Request("GET", "/slow?ms=1")));
  // Queued once the first is on the connection; the third finds the queue full.
  const std::string node = absl::StrCat("127.0.0.1:", upstream_->port());
  ASSERT_TRUE(WaitFor(
      [&] {
        return Sample(metrics::BuildFamilies(proxy_->Scrape(absl::Seconds(5))),
                      "qpool_rest_calls_waiting", {{"node", node}}) == 1;
      },
      absl::Seconds(10)));
  ASSERT_TRUE(refused.Send(Request("GET", "/collections")));
  const Reply reply = refused.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 429u);
  EXPECT_EQ(reply.headers["retry-after"], "1");
  EXPECT_NE(ErrorOf(reply.body).find("max_pending"), std::string::npos) << reply.body;
  EXPECT_EQ(busy.Read().status, 200u);
  EXPECT_EQ(waiting.Read().status, 200u);
  EXPECT_EQ(Sample(metrics::BuildFamilies(proxy_->Scrape(absl::Seconds(5))),
                   "qpool_rest_pool_queue_overflows_total", {{"node", node}}),
            1);
}

// The value of the sample of `family` whose labels include all of `labels`; -1 when none.
double Sample(const std::vector<prometheus::MetricFamily>& families, const std::string& family,
              const std::map<std::string, std::string>& labels) {
  for (const auto& f : families) {
    if (f.name != family) continue;
    for (const auto& metric : f.metric) {
      size_t matched = 0;
      for (const auto& label : metric.label) {
        auto it = labels.find(label.name);
        if (it != labels.end() && it->second == label.value) matched++;
      }
      if (matched == labels.size()) {
        return f.type == prometheus::MetricType::Counter ? metric.counter.value
                                                         : metric.gauge.value;
      }
    }
  }
  return -1;
}

TEST_F(RestForwardingTest, CountedWithTheProtocolLabelAndShownInPool) {
  Client client(port_);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client.Send(Request("POST", "/collections/c/points/search", "{}")));
    ASSERT_EQ(client.Read().status, 200u);
  }
  ASSERT_TRUE(client.Send(Request("GET", "/status/404")));
  ASSERT_EQ(client.Read().status, 404u);
  // The answer's last byte reaches the client before qpoold's write completes and counts it.
  const std::string node = absl::StrCat("127.0.0.1:", upstream_->port());
  metrics::ScrapeInput input;
  std::vector<prometheus::MetricFamily> families;
  ASSERT_TRUE(WaitFor(
      [&] {
        input = proxy_->Scrape(absl::Seconds(5));
        families = metrics::BuildFamilies(input);
        return Sample(families, "qpool_calls_total",
                      {{"protocol", "rest"}, {"class", "other"}, {"code", "404"}}) == 1 &&
               Sample(families, "qpool_rest_upstream_connections",
                      {{"node", node}, {"state", "ready"}}) == 1;
      },
      absl::Seconds(10)));
  EXPECT_EQ(Sample(families, "qpool_calls_total",
                   {{"protocol", "rest"}, {"class", "read"}, {"code", "200"}}),
            3);
  // An unknown route is "other", never its path.
  EXPECT_EQ(Sample(families, "qpool_calls_total",
                   {{"protocol", "rest"}, {"class", "other"}, {"code", "404"}}),
            1);
  EXPECT_EQ(
      Sample(families, "qpool_rest_upstream_connections", {{"node", node}, {"state", "ready"}}), 1);
  // The REST pool's own counters, as the gRPC pools have them: one connect, no failure; and the
  // four requests are calls started.
  // Its connects and failures are in the upstream families, the REST endpoint a node of its own,
  // each counted once.
  EXPECT_EQ(Sample(families, "qpool_upstream_connects_total", {{"node", node}}), 1);
  for (const char* reason : {"connect", "timeout", "other", "handshake"}) {
    EXPECT_EQ(Sample(families, "qpool_upstream_connect_failures_total",
                     {{"node", node}, {"reason", reason}}),
              0)
        << reason;
  }
  EXPECT_EQ(Sample(families, "qpool_rest_pool_acquire_timeouts_total", {{"node", node}}), 0);
  EXPECT_EQ(Sample(families, "qpool_calls_started_total", {}), 4);
  const std::string pool = metrics::PoolJson(input);
  EXPECT_NE(pool.find("\"rest_nodes\":[{\"node\":\"" + node + "\""), std::string::npos) << pool;
}

// 1,000 keep-alive app connections x 4 requests through rest.max_connections 4: the upstream
// never sees more than 4 connections, and every answer is the right one.
TEST_F(RestForwardingTest, ThousandAppConnectionsShareFourUpstreamConnections) {
  StartProxy([](config::Config& c) {
    c.rest.max_connections = 4;
    c.upstream.max_pending = 2048;
    c.upstream.acquire_timeout = absl::Seconds(20);
  });
  constexpr int kThreads = 20;
  constexpr int kPerThread = 50;
  constexpr int kRounds = 4;
  std::atomic<int> correct{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::unique_ptr<Client>> clients;
      for (int i = 0; i < kPerThread; ++i) clients.push_back(std::make_unique<Client>(port_));
      for (int round = 0; round < kRounds; ++round) {
        for (int i = 0; i < kPerThread; ++i) {
          const std::string body = absl::StrCat("{\"t\":", t, ",\"i\":", i, ",\"r\":", round, "}");
          clients[i]->Send(Request("POST", "/collections/c/points/search", body));
        }
        for (int i = 0; i < kPerThread; ++i) {
          const std::string body = absl::StrCat("{\"t\":", t, ",\"i\":", i, ",\"r\":", round, "}");
          const Reply reply = clients[i]->Read(absl::Seconds(60));
          (reply.ok && reply.status == 200 && reply.body == body ? correct : wrong)++;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(correct.load(), kThreads * kPerThread * kRounds);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(upstream_->max_open_connections(), 4);
  EXPECT_EQ(upstream_->requests(), kThreads * kPerThread * kRounds);
}

// --- chunked trailers (RFC 9112 section 7.1.2), byte for byte, against a scripted raw upstream ---

// The body of `raw` when it is exactly one whole request (`kRequest`) or answer, as Beast parses
// it; nullopt otherwise.
template <bool kRequest>
std::optional<std::string> BodyOfWhole(const std::string& raw) {
  http::parser<kRequest, http::string_body> parser;
  parser.eager(true);
  parser.body_limit(1 << 20);
  boost::system::error_code ec;
  const size_t used = parser.put(boost::asio::buffer(raw), ec);
  if (ec || !parser.is_done() || used != raw.size()) return std::nullopt;
  return parser.get().body();
}

class RestRawUpstreamTest : public RestForwardingTest {
 protected:
  void SetUp() override {
    if (tls_ && TestCertsDir().empty()) GTEST_SKIP() << "the openssl command is not available";
    RestForwardingTest::SetUp();
    auto raw = tls_ ? RawHttpUpstream::StartTls(TestCert("server.pem"), TestCert("server.key"))
                    : RawHttpUpstream::Start();
    ASSERT_TRUE(raw.ok()) << raw.status();
    raw_ = std::move(*raw);
    StartProxy([this](config::Config& c) {
      c.upstream.rest_nodes = {{"127.0.0.1", raw_->port()}};
      if (tls_) {
        c.upstream.tls.defaults.enabled = true;
        c.upstream.tls.defaults.ca_file = TestCert("ca.pem");
      }
      if (edit_) edit_(c);
    });
  }
  void TearDown() override {
    RestForwardingTest::TearDown();
    if (raw_ != nullptr) raw_->Stop();
  }

  // A chunked PUT of `size` bytes (7,000-byte chunks) with a trailer field, through a proxy
  // whose replay copy (4 KiB) is too small for it, so the body streams through: the node gets the
  // whole body and then the trailer.
  void ExpectStreamedRequestTrailersReachTheNode(size_t size) {
    edit_ = [](config::Config& c) { c.retry.replay_buffer_per_call = 4096; };
    SetUp();  // again, with the edit
    Client client(port_);
    const std::string body = Pattern(size);
    std::string request =
        "PUT /collections/c/points HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (size_t at = 0; at < body.size(); at += 7000) {
      const std::string part = body.substr(at, 7000);
      absl::StrAppend(&request, absl::Hex(part.size()), "\r\n", part, "\r\n");
    }
    absl::StrAppend(&request, "0\r\nX-Checksum: 42\r\n\r\n");
    ASSERT_TRUE(client.Send(request));
    const Reply reply = client.Read(absl::Seconds(20));
    ASSERT_TRUE(reply.ok) << reply.error;
    const std::optional<std::string> raw = raw_->NextRequest(absl::Seconds(5));
    ASSERT_TRUE(raw.has_value());
    EXPECT_EQ(BodyOfWhole<true>(*raw), body);
    EXPECT_TRUE(absl::EndsWith(*raw, "\r\n0\r\nX-Checksum: 42\r\n\r\n"))
        << raw->substr(raw->size() - 40);
  }

  bool tls_ = false;  // the node speaks TLS (upstream.tls with the test CA)
  std::function<void(config::Config&)> edit_;
  std::unique_ptr<RawHttpUpstream> raw_;
};

// The head of a request as the node got it (up to its empty line), and what follows.
std::pair<std::string, std::string> SplitHead(const std::string& raw) {
  const size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return {raw, ""};
  return {raw.substr(0, end + 4), raw.substr(end + 4)};
}

TEST_F(RestRawUpstreamTest, RequestTrailersReachTheNodeAfterTheHeldBody) {
  Client client(port_);
  ASSERT_TRUE(client.Send(
      "POST /collections/c/points/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
      "Trailer: X-Checksum, X-Other\r\nTE: trailers\r\n\r\n"
      "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: abc123\r\nX-Other:  two \r\n\r\n"));
  Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.body, "{}");
  std::optional<std::string> raw = raw_->NextRequest(absl::Seconds(5));
  ASSERT_TRUE(raw.has_value());
  auto [head, rest] = SplitHead(*raw);
  EXPECT_TRUE(absl::StrContains(head, "\r\nTransfer-Encoding: chunked\r\n")) << head;
  EXPECT_TRUE(absl::StrContains(head, "\r\nTrailer: X-Checksum, X-Other\r\n")) << head;
  EXPECT_TRUE(absl::StrContains(head, "\r\nTE: trailers\r\n")) << head;
  EXPECT_FALSE(absl::StrContains(head, "Content-Length")) << head;
  // One chunk (qpoold held the body whole; chunk extensions are not kept), then the trailers as
  // Beast parsed them (the value's surrounding whitespace is not part of it).
  EXPECT_EQ(rest, "b\r\nhello world\r\n0\r\nX-Checksum: abc123\r\nX-Other: two\r\n\r\n");

  // No body bytes, trailers only; the same connections go on.
  ASSERT_TRUE(client.Send(
      "POST /collections/c/points/count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nX-A: 1\r\n\r\n"));
  reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  raw = raw_->NextRequest(absl::Seconds(5));
  ASSERT_TRUE(raw.has_value());
  EXPECT_EQ(SplitHead(*raw).second, "0\r\nX-A: 1\r\n\r\n");
  EXPECT_EQ(raw_->connections_accepted(), 1);

  // Without trailers a chunked request goes on framed by its length, as before.
  ASSERT_TRUE(client.Send(
      "POST /collections/c/points/count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "2\r\n{}\r\n0\r\n\r\n"));
  ASSERT_TRUE(client.Read().ok);
  raw = raw_->NextRequest(absl::Seconds(5));
  ASSERT_TRUE(raw.has_value());
  EXPECT_TRUE(absl::StrContains(SplitHead(*raw).first, "Content-Length: 2\r\n")) << *raw;
  EXPECT_EQ(SplitHead(*raw).second, "{}");
}

TEST_F(RestRawUpstreamTest, RequestTrailersFollowAStreamedBody) {
  ExpectStreamedRequestTrailersReachTheNode(300 * 1024);
}

// An answer's trailers reach the app, the answer read whole and in parts (each part forwarded
// as it arrives, before the next is sent).
void ExpectAnswerTrailersWholeAndInParts(RawHttpUpstream& upstream, uint16_t port) {
  Client client(port);
  // The whole answer in one piece: read at once with the head.
  upstream.Script(
      {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
       "Trailer: X-Checksum\r\n\r\n2\r\n{}\r\n0\r\nX-Checksum: abc\r\n\r\n"});
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  std::string raw = client.ReadRawUntil("\r\n0\r\nX-Checksum: abc\r\n\r\n");
  EXPECT_EQ(raw,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTrailer: X-Checksum\r\n"
            "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Checksum: abc\r\n\r\n");

  // In three parts: the head and a chunk, another chunk, the last chunk with two trailers.
  upstream.Script({"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                   "4\r\ndefg\r\n", "0\r\nX-Sum: 7\r\nX-Sum: 8\r\n\r\n"});
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  raw = client.ReadRawUntil("3\r\nabc\r\n");
  upstream.Release();
  raw += client.ReadRawUntil("4\r\ndefg\r\n");
  upstream.Release();
  raw += client.ReadRawUntil("0\r\nX-Sum: 7\r\nX-Sum: 8\r\n\r\n");
  EXPECT_EQ(raw,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n"
            "0\r\nX-Sum: 7\r\nX-Sum: 8\r\n\r\n");

  // No trailers, the last chunk alone: one last chunk reaches the app, nothing after it (the
  // next answer on the connection parses).
  upstream.Script(
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", "0\r\n\r\n"});
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  raw = client.ReadRawUntil("3\r\nabc\r\n");
  upstream.Release();
  raw += client.ReadRawUntil("0\r\n\r\n");
  EXPECT_EQ(raw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  const Reply next = client.Read();
  ASSERT_TRUE(next.ok) << next.error;
  EXPECT_EQ(next.raw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_EQ(upstream.connections_accepted(), 1);
}

TEST_F(RestRawUpstreamTest, AnswerTrailersReachTheAppWholeAndInParts) {
  ExpectAnswerTrailersWholeAndInParts(*raw_, port_);
}

TEST_F(RestRawUpstreamTest, AnHttp10AppGetsTheBodyWithoutTheTrailers) {
  // HTTP/1.0 has no chunked coding: the body is delimited by the close, the trailers cannot go.
  Client client(port_);
  raw_->Script(
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
       "0\r\nX-Sum: 7\r\n\r\n"});
  ASSERT_TRUE(client.Send("GET /collections HTTP/1.0\r\nHost: x\r\n\r\n"));
  const Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.raw, "HTTP/1.0 200 OK\r\n\r\nabc");
}

// --- the same trailers over TLS to the node: qpoold's TLS reads and writes keep them too ---

const auto* const kCerts = RegisterTestCerts("qpool_rest_forwarding");

class RestRawTlsUpstreamTest : public RestRawUpstreamTest {
 protected:
  RestRawTlsUpstreamTest() { tls_ = true; }
};

TEST_F(RestRawTlsUpstreamTest, TrailersGoBothWaysOverTls) {
  Client client(port_);
  raw_->Script(
      {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
       "Trailer: X-Checksum\r\n\r\n2\r\n{}\r\n0\r\nX-Checksum: abc\r\n\r\n"});
  ASSERT_TRUE(client.Send(
      "POST /collections/c/points/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
      "Trailer: X-Checksum\r\nTE: trailers\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc123\r\n\r\n"));
  std::string answer = client.ReadRawUntil("\r\n0\r\nX-Checksum: abc\r\n\r\n");
  EXPECT_EQ(answer,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTrailer: X-Checksum\r\n"
            "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Checksum: abc\r\n\r\n");
  std::optional<std::string> raw = raw_->NextRequest(absl::Seconds(5));
  ASSERT_TRUE(raw.has_value());
  auto [head, rest] = SplitHead(*raw);
  EXPECT_TRUE(absl::StrContains(head, "\r\nTransfer-Encoding: chunked\r\n")) << head;
  EXPECT_TRUE(absl::StrContains(head, "\r\nTrailer: X-Checksum\r\n")) << head;
  EXPECT_EQ(rest, "5\r\nhello\r\n0\r\nX-Checksum: abc123\r\n\r\n");

  // An answer in three TLS records: the head and a chunk, another chunk, the trailers. (Over TLS
  // qpoold reads a chunked answer until its chunk buffer is full or the answer ends, so the app
  // may get the data re-chunked: the body and the trailers are what must arrive.)
  raw_->Script({"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                "4\r\ndefg\r\n", "0\r\nX-Sum: 7\r\nX-Sum: 8\r\n\r\n"});
  raw_->Release();
  raw_->Release();
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  answer = client.ReadRawUntil("\r\n0\r\nX-Sum: 7\r\nX-Sum: 8\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(answer, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))
      << answer;
  EXPECT_TRUE(absl::EndsWith(answer, "\r\n0\r\nX-Sum: 7\r\nX-Sum: 8\r\n\r\n")) << answer;
  EXPECT_EQ(BodyOfWhole<false>(answer), "abcdefg") << answer;
  EXPECT_EQ(raw_->connections_accepted(), 1);  // one TLS connection carried both
}

// Over TLS too: a part of a chunked answer reaches the app before the node sends the next.
TEST_F(RestRawTlsUpstreamTest, AnswerTrailersReachTheAppWholeAndInPartsOverTls) {
  ExpectAnswerTrailersWholeAndInParts(*raw_, port_);
}

TEST_F(RestRawTlsUpstreamTest, RequestTrailersFollowAStreamedBodyOverTls) {
  ExpectStreamedRequestTrailersReachTheNode(100 * 1024);
}

// A delete by filter on a pooled connection the node had closed while idle goes on another
// connection: qpoold sees the close before writing (nothing was sent), so this is no replay of a
// request the node may have run.
TEST_F(RestRawUpstreamTest, ADeleteByFilterAvoidsAConnectionTheNodeClosedIdle) {
  Client client(port_);
  // A keep-alive answer, then the node closes the connection (an idle close).
  raw_->Script({"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", ""});
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  ASSERT_TRUE(client.Read().ok);
  ASSERT_TRUE(raw_->NextRequest(absl::Seconds(5)).has_value());
  ASSERT_TRUE(WaitFor([&] { return raw_->connections_closed() == 1; }, absl::Seconds(5)));
  const std::string filter = R"({"filter":{"must":[]}})";
  ASSERT_TRUE(client.Send(Request("POST", "/collections/c/points/delete", filter)));
  const Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u) << reply.body;
  const std::optional<std::string> raw = raw_->NextRequest(absl::Seconds(5));
  ASSERT_TRUE(raw.has_value());
  EXPECT_TRUE(absl::EndsWith(*raw, filter));
  EXPECT_EQ(raw_->connections_accepted(), 2);
  EXPECT_FALSE(raw_->NextRequest(absl::Milliseconds(1)).has_value());  // sent once
}

// The node closes a keep-alive connection while it is idle (its keep-alive timeout): qpoold's
// idle watch sees the close and the pool drops the connection at once, so the next request goes
// out on a new connection the first time (no replay of a request lost on the closed one).
void ExpectAnIdleCloseDropsTheConnection(RawHttpUpstream& raw, server::Proxy& proxy,
                                         uint16_t port) {
  Client client(port);
  raw.Script({"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", ""});
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  ASSERT_TRUE(client.Read().ok);
  ASSERT_TRUE(WaitFor([&] { return raw.connections_closed() == 1; }, absl::Seconds(5)));
  const std::string node = absl::StrCat("127.0.0.1:", raw.port());
  auto open = [&] {
    const std::vector<prometheus::MetricFamily> families =
        metrics::BuildFamilies(proxy.Scrape(absl::Seconds(5)));
    double total = 0;
    for (const char* state : {"connecting", "ready", "busy", "draining"}) {
      total +=
          Sample(families, "qpool_rest_upstream_connections", {{"node", node}, {"state", state}});
    }
    return total;
  };
  EXPECT_TRUE(WaitFor([&] { return open() == 0; }, absl::Seconds(5)))
      << "the pool kept the connection the node closed";
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  const Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u) << reply.body;
  EXPECT_EQ(raw.connections_accepted(), 2);
  EXPECT_EQ(proxy.stats().transparent_retries, 0u);
}

TEST_F(RestRawUpstreamTest, AConnectionTheNodeClosedIdleLeavesThePoolAtOnce) {
  // Only the idle watch may close it: qpoold's own idle close (rest.idle_timeout) comes later.
  edit_ = [](config::Config& c) { c.rest.idle_timeout = absl::Minutes(1); };
  SetUp();
  ExpectAnIdleCloseDropsTheConnection(*raw_, *proxy_, port_);
}

// A connection freed while a request waits in the pool's queue passes straight to that request
// (its answer read takes over the watch the previous exchange's end started); once that exchange
// ends and nothing waits, the connection is idle and still watched: the node's close takes it out
// of the pool at once.
TEST_F(RestRawUpstreamTest, AConnectionPassedToAQueuedRequestIsWatchedOnceIdle) {
  edit_ = [](config::Config& c) {
    c.rest.max_connections = 1;
    c.rest.idle_timeout = absl::Minutes(1);  // only the idle watch may close it
  };
  SetUp();
  Client first(port_), queued(port_);
  raw_->Script({"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "{}"});  // held until Release
  raw_->Script({"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", ""});  // then closed idle
  ASSERT_TRUE(first.Send(Request("GET", "/collections")));
  ASSERT_TRUE(raw_->NextRequest(absl::Seconds(5)).has_value());
  ASSERT_TRUE(queued.Send(Request("GET", "/collections")));
  const std::string node = absl::StrCat("127.0.0.1:", raw_->port());
  auto sample = [&](const char* name, std::map<std::string, std::string> labels) {
    return Sample(metrics::BuildFamilies(proxy_->Scrape(absl::Seconds(5))), name, labels);
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        return sample("qpool_rest_calls_waiting", {{"node", node}}) == 1;
      },
      absl::Seconds(10)));
  raw_->Release();  // the first answer ends: the connection goes to the queued request
  const Reply first_reply = first.Read();
  ASSERT_TRUE(first_reply.ok) << first_reply.error;
  const Reply queued_reply = queued.Read();
  ASSERT_TRUE(queued_reply.ok) << queued_reply.error;
  EXPECT_EQ(queued_reply.status, 200u);
  ASSERT_TRUE(raw_->NextRequest(absl::Seconds(5)).has_value());
  EXPECT_EQ(raw_->connections_accepted(), 1);  // both requests went out on the one connection
  ASSERT_TRUE(WaitFor([&] { return raw_->connections_closed() == 1; }, absl::Seconds(5)));
  auto open = [&] {
    double total = 0;
    for (const char* state : {"connecting", "ready", "busy", "draining"}) {
      total += sample("qpool_rest_upstream_connections", {{"node", node}, {"state", state}});
    }
    return total;
  };
  EXPECT_TRUE(WaitFor([&] { return open() == 0; }, absl::Seconds(5)))
      << "the pool kept the connection the node closed";
}

TEST_F(RestRawTlsUpstreamTest, AConnectionTheNodeClosedIdleLeavesThePoolAtOnceOverTls) {
  // Only the idle watch may close it: qpoold's own idle close (rest.idle_timeout) comes later.
  edit_ = [](config::Config& c) { c.rest.idle_timeout = absl::Minutes(1); };
  SetUp();
  ExpectAnIdleCloseDropsTheConnection(*raw_, *proxy_, port_);
}

// The node's interim answer and its final one arrive in one read: the final head is parsed from
// the connection's buffer without a read (fast_io inline), and taken up from the event loop; the
// app gets the final answer once, and the connection goes on.
TEST_F(RestRawUpstreamTest, InterimAndFinalAnswerInOneReadAreForwardedOnce) {
  Client client(port_);
  raw_->Script({"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"});
  ASSERT_TRUE(client.Send(Request("POST", "/collections/c/points/search", "{}")));
  Reply reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.raw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  reply = client.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.raw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_EQ(raw_->connections_accepted(), 1);
}

// The node closes in the middle of an answer's body (its length said 100): what came is
// forwarded, then the app's connection closes (the answer cannot be completed), counted as a
// failed call; other connections are served.
TEST_F(RestRawUpstreamTest, ANodeClosingMidBodyEndsTheAppsConnection) {
  Client client(port_);
  raw_->Script({"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", ""});
  ASSERT_TRUE(client.Send(Request("GET", "/collections")));
  const std::string raw = client.ReadRawUntil("only ten b");
  EXPECT_EQ(raw, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b");
  EXPECT_TRUE(client.ClosedWithin(absl::Seconds(5)));
  Client other(port_);
  ASSERT_TRUE(other.Send(Request("GET", "/collections")));
  const Reply reply = other.Read();
  ASSERT_TRUE(reply.ok) << reply.error;
  EXPECT_EQ(reply.status, 200u);
  EXPECT_EQ(raw_->connections_accepted(), 2);
}

}  // namespace
}  // namespace qpool::testing
