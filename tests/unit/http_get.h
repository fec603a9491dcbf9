// Blocking HTTP/1.1 requests for tests of the admin endpoint and the emulator's control endpoint
// (Boost.Beast), with a deadline.
//
//   HttpReply reply = HttpGet(port, "/readyz");   // reply.status 0 when nothing answered
//   EXPECT_EQ(reply.status, 200);
//   HttpRequest(control_port, "PUT", "/faults", R"({"methods":{"Search":{"error_rate":1}}})");
#ifndef QPOOL_TESTS_UNIT_HTTP_GET_H_
#define QPOOL_TESTS_UNIT_HTTP_GET_H_

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <string>

namespace qpool::testing {

struct HttpReply {
  int status = 0;  // 0: no answer (connection refused, timeout)
  std::string body;
  std::string content_type;
};

inline HttpReply HttpRequest(uint16_t port, const std::string& method, const std::string& target,
                             const std::string& body = "",
                             std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context io;
  beast::tcp_stream stream(io);
  HttpReply reply;
  stream.expires_after(timeout);
  beast::error_code ec;
  stream.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port),
                 ec);
  if (ec) return reply;
  http::request<http::string_body> request(http::string_to_verb(method), target, 11);
  request.set(http::field::host, "127.0.0.1");
  if (!body.empty()) {
    request.set(http::field::content_type, "application/json");
    request.body() = body;
    request.prepare_payload();
  }
  http::write(stream, request, ec);
  if (ec) return reply;
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(stream, buffer, response, ec);
  if (ec) return reply;
  reply.status = static_cast<int>(response.result_int());
  reply.body = response.body();
  reply.content_type = std::string(response[http::field::content_type]);
  stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
  return reply;
}

inline HttpReply HttpGet(uint16_t port, const std::string& target,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  return HttpRequest(port, "GET", target, "", timeout);
}

}  // namespace qpool::testing

#endif  // QPOOL_TESTS_UNIT_HTTP_GET_H_
