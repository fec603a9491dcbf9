#include "tests/support/rest_test_upstream.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace qpool::testing {
namespace {

namespace http = boost::beast::http;
using boost::asio::ip::tcp;

}  // namespace

class RestTestUpstream::Impl {
 public:
  boost::asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::thread thread;
  uint16_t port = 0;
  std::atomic<int> close_next{0};
  std::atomic<int> fail_next{0};
  std::atomic<int> fail_status{503};
  std::atomic<int> fail_retry_after{-1};
  std::atomic<int64_t> failed{0};
  std::atomic<int64_t> accepted{0}, open{0}, max_open{0}, requests{0}, closed_unanswered{0},
      bytes{0};
  std::set<std::shared_ptr<tcp::socket>> sockets;  // io thread only
  bool stopped = false;

  struct Conn : std::enable_shared_from_this<Conn> {
    Impl& impl;
    std::shared_ptr<tcp::socket> socket;
    boost::beast::flat_buffer buffer;
    std::optional<http::request_parser<http::string_body>> request_parser;
    http::response<http::string_body> response;
    boost::asio::steady_timer timer;
    int answered = 0;
    Conn(Impl& i, std::shared_ptr<tcp::socket> s) : impl(i), socket(std::move(s)), timer(i.io) {}

    void Read() {
      request_parser.emplace();
      request_parser->body_limit(256 << 20);
      request_parser->header_limit(1 << 20);
      auto self = shared_from_this();
      http::async_read_header(*socket, buffer, *request_parser,
                              [self](boost::system::error_code ec, size_t) {
                                if (ec) return self->Done();
                                if (self->answered > 0 && self->impl.close_next.load() > 0) {
                                  self->impl.close_next--;
                                  self->impl.closed_unanswered++;
                                  return self->Done();
                                }
                                http::async_read(*self->socket, self->buffer, *self->request_parser,
                                                 [self](boost::system::error_code ec, size_t) {
                                                   if (ec) return self->Done();
                                                   self->Handle();
                                                 });
                              });
    }

    void Handle() {
      auto& request = request_parser->get();
      const std::string target(request.target());
      response = {};
      response.version(11);
      response.keep_alive(request.keep_alive());
      const size_t question = target.find('?');
      const std::string path = target.substr(0, question);
      const std::string query = question == std::string::npos ? "" : target.substr(question + 1);
      auto number = [&](std::string_view key) {
        int64_t value = 0;
        const size_t at = query.find(std::string(key) + "=");
        if (at != std::string::npos) {
          (void)absl::SimpleAtoi(query.substr(at + key.size() + 1), &value);
        }
        return value;
      };
      if (impl.fail_next.load() > 0) {
        impl.fail_next--;
        impl.failed++;
        response.result(static_cast<unsigned>(impl.fail_status.load()));
        if (impl.fail_retry_after.load() >= 0) {
          response.set(http::field::retry_after, std::to_string(impl.fail_retry_after.load()));
        }
        response.set(http::field::content_type, "application/json");
        response.body() = R"({"status":{"error":"failed on purpose"},"time":0.0})";
        response.prepare_payload();
      } else if (path == "/chunked") {
        std::string body(static_cast<size_t>(number("size")), 'a');
        for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + i % 26);
        response.result(200);
        response.body() = std::move(body);
        response.chunked(true);
      } else if (path.rfind("/status/", 0) == 0) {
        int status = 500;
        (void)absl::SimpleAtoi(path.substr(8), &status);
        response.result(static_cast<unsigned>(status));
        response.set(http::field::content_type, "application/json");
        response.body() = R"({"status":{"error":"test upstream"},"time":0.0})";
        response.prepare_payload();
      } else {
        response.result(200);
        for (const char* name : {"host", "api-key", "content-type", "content-encoding",
                                 "connection", "keep-alive", "te", "transfer-encoding", "upgrade",
                                 "x-hop", "expect", "authorization", "content-length"}) {
          if (auto it = request.find(name); it != request.end()) {
            response.set(absl::StrCat("x-seen-", name), it->value());
          }
        }
        response.set("x-seen-method", request.method_string());
        response.set("x-seen-target", request.target());
        if (auto it = request.find(http::field::content_type); it != request.end()) {
          response.set(http::field::content_type, it->value());
        }
        response.body() = std::move(request.body());
        response.prepare_payload();
      }
      impl.bytes += static_cast<int64_t>(request.body().size());
      const int64_t delay = path == "/slow" ? number("ms") : 0;
      auto self = shared_from_this();
      auto write = [self] {
        self->impl.requests++;
        self->answered++;
        http::async_write(*self->socket, self->response,
                          [self](boost::system::error_code ec, size_t) {
                            if (ec || !self->response.keep_alive()) return self->Done();
                            self->Read();
                          });
      };
      if (delay > 0) {
        timer.expires_after(std::chrono::milliseconds(delay));
        timer.async_wait([write](boost::system::error_code) { write(); });
      } else {
        write();
      }
    }

    void Done() {
      if (impl.sockets.erase(socket) == 0) return;
      boost::system::error_code ignored;
      socket->shutdown(tcp::socket::shutdown_both, ignored);
      socket->close(ignored);
      impl.open--;
    }
  };

  void Accept() {
    acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec) return;
      auto shared = std::make_shared<tcp::socket>(std::move(socket));
      sockets.insert(shared);
      accepted++;
      const int64_t now = ++open;
      int64_t seen = max_open.load();
      while (now > seen && !max_open.compare_exchange_weak(seen, now)) {
      }
      std::make_shared<Conn>(*this, shared)->Read();
      Accept();
    });
  }
};

absl::StatusOr<std::unique_ptr<RestTestUpstream>> RestTestUpstream::Start() {
  auto impl = std::make_unique<Impl>();
  boost::system::error_code ec;
  const tcp::endpoint endpoint(boost::asio::ip::make_address("127.0.0.1"), 0);
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(4096, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("REST test upstream: ", ec.message()));
  impl->port = impl->acceptor.local_endpoint().port();
  impl->Accept();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->io.run(); });
  return std::unique_ptr<RestTestUpstream>(new RestTestUpstream(std::move(impl)));
}

RestTestUpstream::RestTestUpstream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RestTestUpstream::~RestTestUpstream() { Stop(); }

void RestTestUpstream::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  Impl* impl = impl_.get();
  boost::asio::post(impl->io, [impl] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
    for (const auto& socket : impl->sockets) socket->close(ignored);
    impl->sockets.clear();
    impl->io.stop();
  });
  if (impl->thread.joinable()) impl->thread.join();
}

uint16_t RestTestUpstream::port() const { return impl_->port; }
void RestTestUpstream::CloseNextReusedRequests(int n) { impl_->close_next = n; }
void RestTestUpstream::FailNextRequests(int n, int status, int retry_after_seconds) {
  impl_->fail_status = status;
  impl_->fail_retry_after = retry_after_seconds;
  impl_->fail_next = n;
}
int64_t RestTestUpstream::failed_on_purpose() const { return impl_->failed.load(); }
int64_t RestTestUpstream::connections_accepted() const { return impl_->accepted.load(); }
int64_t RestTestUpstream::open_connections() const { return impl_->open.load(); }
int64_t RestTestUpstream::max_open_connections() const { return impl_->max_open.load(); }
int64_t RestTestUpstream::requests() const { return impl_->requests.load(); }
int64_t RestTestUpstream::closed_unanswered() const { return impl_->closed_unanswered.load(); }
int64_t RestTestUpstream::bytes_received() const { return impl_->bytes.load(); }

}  // namespace qpool::testing
