#include "daemon/metrics/http_check.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace qpool::metrics {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct Url {
  std::string host;  // without brackets
  std::string port;
  std::string target;
};

absl::StatusOr<Url> ParseUrl(absl::string_view url) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a URL such as http://127.0.0.1:6336/readyz, got \"", url, "\""));
  }
  const size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  Url out;
  out.target = slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash));
  absl::string_view port = "80";
  if (absl::ConsumePrefix(&authority, "[")) {
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("missing ']' in \"", url, "\""));
    }
    out.host = std::string(authority.substr(0, close));
    absl::string_view after = authority.substr(close + 1);
    if (absl::ConsumePrefix(&after, ":")) port = after;
  } else {
    const size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != absl::string_view::npos) port = authority.substr(colon + 1);
  }
  uint32_t port_number = 0;
  if (out.host.empty() || !absl::SimpleAtoi(port, &port_number) || port_number == 0 ||
      port_number > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected http://HOST:PORT/PATH, got \"", url, "\""));
  }
  out.port = std::string(port);
  return out;
}

}  // namespace

absl::Status HttpCheck(const std::string& url_text, absl::Duration timeout) {
  absl::StatusOr<Url> url = ParseUrl(url_text);
  if (!url.ok()) return url.status();
  asio::io_context io;
  beast::tcp_stream stream(io);
  beast::error_code ec;
  tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(url->host, url->port, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(url_text, ": ", ec.message()));
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
  auto timed_out = [&] { return std::chrono::steady_clock::now() >= deadline; };
  // The stream's timer turns a hang at any step into operation_aborted / timeout.
  stream.expires_at(deadline);
  bool done = false;
  http::response<http::string_body> response;
  beast::flat_buffer buffer;
  http::request<http::empty_body> request(http::verb::get, url->target, 11);
  request.set(http::field::host, url->host);
  request.set(http::field::user_agent, "qpoold-healthcheck");
  request.set(http::field::connection, "close");
  stream.async_connect(endpoints, [&](beast::error_code connect_ec, const tcp::endpoint&) {
    if (connect_ec) {
      ec = connect_ec;
      done = true;
      return;
    }
    http::async_write(stream, request, [&](beast::error_code write_ec, size_t) {
      if (write_ec) {
        ec = write_ec;
        done = true;
        return;
      }
      http::async_read(stream, buffer, response, [&](beast::error_code read_ec, size_t) {
        ec = read_ec;
        done = true;
      });
    });
  });
  io.run();
  if (!done || ec == beast::error::timeout || (ec && timed_out())) {
    return absl::DeadlineExceededError(
        absl::StrCat(url_text, ": no answer within ", absl::FormatDuration(timeout)));
  }
  if (ec) return absl::UnavailableError(absl::StrCat(url_text, ": ", ec.message()));
  const unsigned status = response.result_int();
  if (status >= 200 && status < 300) return absl::OkStatus();
  std::string body = response.body();
  body = body.substr(0, body.find('\n'));
  return absl::FailedPreconditionError(absl::StrCat(url_text, ": HTTP ", status, ": ", body));
}

}  // namespace qpool::metrics
