#include "tests/support/raw_http_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace qpool::testing {

namespace http = boost::beast::http;

class RawHttpUpstream::Impl {
 public:
  ~Impl() {
    if (listen_fd >= 0) ::close(listen_fd);
    if (tls_context != nullptr) SSL_CTX_free(tls_context);
  }

  // One accepted connection: the socket, and its TLS session when the server speaks TLS.
  struct Connection {
    int fd = -1;
    SSL* ssl = nullptr;

    ssize_t Recv(char* bytes, size_t size) const {
      if (ssl == nullptr) return ::recv(fd, bytes, size, 0);
      const int n = SSL_read(ssl, bytes, static_cast<int>(size));
      return n > 0 ? n : -1;
    }
    bool SendAll(const std::string& bytes) const {
      if (ssl != nullptr) {
        return bytes.empty() || SSL_write(ssl, bytes.data(), static_cast<int>(bytes.size())) ==
                                    static_cast<int>(bytes.size());
      }
      size_t at = 0;
      while (at < bytes.size()) {
        const ssize_t n = ::send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        at += static_cast<size_t>(n);
      }
      return true;
    }
  };

  void Run() {
    for (;;) {
      const int fd = ::accept(listen_fd, nullptr, nullptr);
      if (fd < 0) {
        if (errno == EINTR) continue;
        return;  // Stop() shut the listening socket down
      }
      {
        absl::MutexLock lock(&mu);
        if (stopped) {
          ::close(fd);
          return;
        }
        conn_fd = fd;
        accepted++;
      }
      Connection connection{fd, nullptr};
      if (tls_context != nullptr) {
        connection.ssl = SSL_new(tls_context);
        SSL_set_fd(connection.ssl, fd);
        if (SSL_accept(connection.ssl) == 1) Serve(connection);
        ERR_clear_error();
        SSL_free(connection.ssl);
      } else {
        Serve(connection);
      }
      absl::MutexLock lock(&mu);
      conn_fd = -1;
      ::close(fd);
      closed++;
    }
  }

  // Requests on one connection until it closes.
  void Serve(const Connection& connection) {
    std::string pending;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.eager(true);
      parser.header_limit(1 << 20);
      parser.body_limit(64 << 20);
      std::string raw;
      while (!parser.is_done()) {
        if (!pending.empty()) {
          boost::system::error_code ec;
          const size_t used = parser.put(boost::asio::buffer(pending), ec);
          raw.append(pending, 0, used);
          pending.erase(0, used);
          if (ec && ec != http::error::need_more) return;  // broken request: drop the connection
          if (!ec && used != 0) continue;
        }
        char bytes[16384];
        const ssize_t n = connection.Recv(bytes, sizeof(bytes));
        if (n <= 0) return;
        pending.append(bytes, static_cast<size_t>(n));
      }
      std::vector<std::string> pieces;
      {
        absl::MutexLock lock(&mu);
        requests.push_back(std::move(raw));
        if (!scripts.empty()) {
          pieces = std::move(scripts.front());
          scripts.pop_front();
        }
      }
      if (pieces.empty()) pieces = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"};
      for (size_t i = 0; i < pieces.size(); ++i) {
        if (pieces[i].empty()) return;  // the connection closes
        if (i > 0) {
          absl::MutexLock lock(&mu);
          if (!mu.AwaitWithTimeout(absl::Condition(this, &Impl::Released), absl::Seconds(10)) ||
              stopped) {
            return;
          }
          releases--;
        }
        if (!connection.SendAll(pieces[i])) return;
      }
    }
  }

  bool Released() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return releases > 0 || stopped; }
  bool HasRequest() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return !requests.empty(); }

  int listen_fd = -1;
  uint16_t port = 0;
  SSL_CTX* tls_context = nullptr;  // null: cleartext
  std::thread thread;
  absl::Mutex mu;
  bool stopped ABSL_GUARDED_BY(mu) = false;
  int conn_fd ABSL_GUARDED_BY(mu) = -1;
  int64_t accepted ABSL_GUARDED_BY(mu) = 0;
  int64_t closed ABSL_GUARDED_BY(mu) = 0;
  int releases ABSL_GUARDED_BY(mu) = 0;
  std::deque<std::vector<std::string>> scripts ABSL_GUARDED_BY(mu);
  std::deque<std::string> requests ABSL_GUARDED_BY(mu);
};

absl::StatusOr<std::unique_ptr<RawHttpUpstream>> RawHttpUpstream::Start() {
  return Start(std::make_unique<Impl>());
}

absl::StatusOr<std::unique_ptr<RawHttpUpstream>> RawHttpUpstream::StartTls(
    const std::string& cert_file, const std::string& key_file) {
  // OpenSSL writes to the socket with write(): a peer gone must be EPIPE, not a SIGPIPE death.
  ::signal(SIGPIPE, SIG_IGN);
  auto impl = std::make_unique<Impl>();
  impl->tls_context = SSL_CTX_new(TLS_server_method());
  if (impl->tls_context == nullptr ||
      SSL_CTX_use_certificate_chain_file(impl->tls_context, cert_file.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(impl->tls_context, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("raw HTTP upstream: cannot load ", cert_file, " and ", key_file));
  }
  return Start(std::move(impl));
}

absl::StatusOr<std::unique_ptr<RawHttpUpstream>> RawHttpUpstream::Start(
    std::unique_ptr<Impl> impl) {
  impl->listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (impl->listen_fd < 0 ||
      ::bind(impl->listen_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(impl->listen_fd, 64) != 0 ||
      ::getsockname(impl->listen_fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return absl::UnavailableError(absl::StrCat("raw HTTP upstream: ", std::strerror(errno)));
  }
  impl->port = ntohs(address.sin_port);
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<RawHttpUpstream>(new RawHttpUpstream(std::move(impl)));
}

RawHttpUpstream::RawHttpUpstream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RawHttpUpstream::~RawHttpUpstream() { Stop(); }

void RawHttpUpstream::Stop() {
  {
    absl::MutexLock lock(&impl_->mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
    if (impl_->conn_fd >= 0) ::shutdown(impl_->conn_fd, SHUT_RDWR);
  }
  ::shutdown(impl_->listen_fd, SHUT_RDWR);
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t RawHttpUpstream::port() const { return impl_->port; }

void RawHttpUpstream::Script(std::vector<std::string> pieces) {
  absl::MutexLock lock(&impl_->mu);
  impl_->scripts.push_back(std::move(pieces));
}

void RawHttpUpstream::Release() {
  absl::MutexLock lock(&impl_->mu);
  impl_->releases++;
}

std::optional<std::string> RawHttpUpstream::NextRequest(absl::Duration timeout) {
  absl::MutexLock lock(&impl_->mu);
  if (!impl_->mu.AwaitWithTimeout(absl::Condition(impl_.get(), &Impl::HasRequest), timeout)) {
    return std::nullopt;
  }
  std::string raw = std::move(impl_->requests.front());
  impl_->requests.pop_front();
  return raw;
}

int64_t RawHttpUpstream::connections_accepted() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->accepted;
}

int64_t RawHttpUpstream::connections_closed() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->closed;
}

}  // namespace qpool::testing
