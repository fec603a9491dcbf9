#include "daemon/metrics/admin_server.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "daemon/metrics/scrape.h"
#include "spdlog/spdlog.h"

namespace qpool::metrics {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr auto kIdleTimeout = std::chrono::seconds(30);

struct Reply {
  http::status status = http::status::ok;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::string allow;  // the Allow header of a 405
};

// A loopback peer: 127.0.0.0/8, ::1, or an IPv4 loopback address mapped into IPv6 (what a
// dual-stack "[::]" listener sees for a client of 127.0.0.1).
bool IsLoopbackPeer(const asio::ip::address& address) {
  if (address.is_loopback()) return true;
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  }
  return false;
}

Reply Route(const http::request<http::string_body>& request, const tcp::endpoint& peer,
            AdminBackend& backend, const AdminServerOptions& options) {
  const beast::string_view target = request.target();
  const beast::string_view path = target.substr(0, target.find('?'));
  Reply reply;
  if (path == "/quitquitquit" && options.on_quit) {
    if (request.method() != http::verb::post) {
      reply.status = http::status::method_not_allowed;
      reply.allow = "POST";
      reply.body = "only POST\n";
    } else if (!IsLoopbackPeer(peer.address())) {
      reply.status = http::status::forbidden;
      reply.body = "only from a loopback address\n";
      SPDLOG_WARN("admin: POST /quitquitquit from {} refused: not a loopback address",
                  peer.address().to_string());
    } else if (request.find(http::field::origin) != request.end()) {
      // A web page open in a browser on the same host can POST to 127.0.0.1 without a CORS
      // preflight; browsers mark such requests with Origin, which curl and apps do not send.
      reply.status = http::status::forbidden;
      reply.body = "not from a browser (Origin header)\n";
      SPDLOG_WARN("admin: POST /quitquitquit with Origin {} refused",
                  std::string(request[http::field::origin]));
    } else {
      SPDLOG_INFO("admin: POST /quitquitquit from {}: draining", peer.address().to_string());
      options.on_quit();
      reply.body = "draining\n";
    }
    return reply;
  }
  if (request.method() != http::verb::get && request.method() != http::verb::head) {
    reply.status = http::status::method_not_allowed;
    reply.allow = "GET, HEAD";
    reply.body = "only GET\n";
    return reply;
  }
  if (path == "/metrics") {
    reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
    reply.body = RenderMetrics(backend, options);
  } else if (path == "/livez") {
    if (backend.Live(options.worker_timeout)) {
      reply.body = "ok\n";
    } else {
      reply.status = http::status::service_unavailable;
      reply.body = "an I/O worker did not answer in time\n";
    }
  } else if (path == "/readyz") {
    const std::string reason = backend.NotReadyReason();
    if (reason.empty()) {
      reply.body = "ok\n";
    } else {
      reply.status = http::status::service_unavailable;
      reply.body = reason + "\n";
    }
  } else if (path == "/startupz") {
    if (backend.Started()) {
      reply.body = "ok\n";
    } else {
      reply.status = http::status::service_unavailable;
      reply.body = "starting\n";
    }
  } else if (path == "/pool") {
    reply.content_type = "application/json";
    reply.body = PoolJson(backend.Scrape(options.worker_timeout));
  } else if (path == "/") {
    reply.body = "qpoold admin: /metrics /livez /readyz /startupz /pool, POST /quitquitquit\n";
  } else {
    reply.status = http::status::not_found;
    reply.body = "not found; try /metrics /livez /readyz /startupz /pool\n";
  }
  return reply;
}

// One admin connection: read a request, answer, repeat while keep-alive.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, AdminBackend& backend, const AdminServerOptions& options)
      : stream_(std::move(socket)), backend_(backend), options_(options) {}

  void Start() {
    boost::system::error_code ec;
    peer_ = stream_.socket().remote_endpoint(ec);
    Read();
  }

 private:
  void Read() {
    request_ = {};
    stream_.expires_after(kIdleTimeout);
    http::async_read(
        stream_, buffer_, request_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec) {
      stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      return;
    }
    Reply reply = Route(request_, peer_, backend_, options_);
    auto response =
        std::make_shared<http::response<http::string_body>>(reply.status, request_.version());
    response->set(http::field::server, "qpoold");
    response->set(http::field::content_type, reply.content_type);
    if (!reply.allow.empty()) response->set(http::field::allow, reply.allow);
    response->keep_alive(request_.keep_alive());
    if (request_.method() == http::verb::head) {
      response->content_length(reply.body.size());
    } else {
      response->body() = std::move(reply.body);
      response->prepare_payload();
    }
    http::async_write(stream_, *response,
                      [self = shared_from_this(), response](beast::error_code ec, size_t) {
                        if (ec || !response->keep_alive()) {
                          self->stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
                          return;
                        }
                        self->Read();
                      });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;  // a body is read (default limit) and ignored
  tcp::endpoint peer_;
  AdminBackend& backend_;
  const AdminServerOptions& options_;
};

class AdminServerImpl : public AdminServer {
 public:
  AdminServerImpl(const AdminServerOptions& options, AdminBackend& backend)
      : options_(options), backend_(backend), acceptor_(io_) {}
  ~AdminServerImpl() override { Stop(); }

  absl::Status Bind() {
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(options_.host, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("admin.listen: ", options_.host, " is not an IP address: ", ec.message()));
    }
    const tcp::endpoint endpoint(address, options_.port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    // "[::]" serves IPv4 clients too (as v4-mapped addresses), whatever net.ipv6.bindv6only says.
    if (!ec && address.is_v6() && address.is_unspecified()) {
      acceptor_.set_option(asio::ip::v6_only(false), ec);
    }
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.host, ":",
                                                 options_.port, " (admin.listen): ", ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    Accept();
    thread_ = std::thread([this] { io_.run(); });
    return absl::OkStatus();
  }

  uint16_t port() const override { return port_; }

  void Stop() override {
    if (!thread_.joinable()) return;
    asio::post(io_, [this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      io_.stop();  // sessions die with the io_context's pending handlers
    });
    thread_.join();
  }

 private:
  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
      if (!ec) {
        std::make_shared<Session>(std::move(socket), backend_, options_)->Start();
      } else {
        SPDLOG_WARN("admin: accept failed: {}", ec.message());
      }
      Accept();
    });
  }

  const AdminServerOptions options_;
  AdminBackend& backend_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::thread thread_;
};

}  // namespace

std::string RenderMetrics(AdminBackend& backend, const AdminServerOptions& options) {
  return RenderScrapeText(backend.Scrape(options.worker_timeout), options.version, options.reloads);
}

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(const AdminServerOptions& options,
                                                                AdminBackend& backend) {
  auto server = std::make_unique<AdminServerImpl>(options, backend);
  if (absl::Status status = server->Bind(); !status.ok()) return status;
  return std::unique_ptr<AdminServer>(std::move(server));
}

}  // namespace qpool::metrics
