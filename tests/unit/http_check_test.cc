// `qpoold healthcheck`'s one-shot GET (daemon/metrics/http_check): the URLs it takes and refuses,
// and what each kind of answer (2xx, another status, nothing, silence) becomes.
#include "daemon/metrics/http_check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qpool::metrics {
namespace {

using ::testing::HasSubstr;

// A listening socket on 127.0.0.1 that answers one request with `reply` (when given), or leaves
// the connection silent (its backlog completes the connect without an accept).
class OneShotServer {
 public:
  explicit OneShotServer(std::string reply = "") : reply_(std::move(reply)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 || ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      ADD_FAILURE() << "cannot listen";
      return;
    }
    port_ = ntohs(address.sin_port);
    if (reply_.empty()) return;
    thread_ = std::thread([this] {
      const int connection = ::accept(fd_, nullptr, nullptr);
      if (connection < 0) return;
      std::string request;
      char buffer[1024];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::read(connection, buffer, sizeof(buffer));
        if (n <= 0) break;
        request.append(buffer, static_cast<size_t>(n));
      }
      request_ = request;
      (void)!::write(connection, reply_.data(), reply_.size());
      ::close(connection);
    });
  }
  ~OneShotServer() {
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  // The request it read; call after the check returned.
  std::string request() {
    if (thread_.joinable()) thread_.join();
    return request_;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::string reply_;
  std::string request_;
  std::thread thread_;
};

TEST(HttpCheckTest, A2xxAnswerIsOkAndTheRequestNamesThePath) {
  OneShotServer server("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(HttpCheck(server.Url("/readyz"), absl::Seconds(5)).ok());
  const std::string request = server.request();
  EXPECT_THAT(request, HasSubstr("GET /readyz HTTP/1.1\r\n"));
  EXPECT_THAT(request, HasSubstr("User-Agent: qpoold-healthcheck"));
  EXPECT_THAT(request, HasSubstr("Host: 127.0.0.1"));
}

TEST(HttpCheckTest, AUrlWithoutAPathAsksForTheRoot) {
  OneShotServer server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_TRUE(HttpCheck(server.Url(""), absl::Seconds(5)).ok());
  EXPECT_THAT(server.request(), HasSubstr("GET / HTTP/1.1\r\n"));
}

TEST(HttpCheckTest, AnotherStatusIsAFailedPreconditionWithTheBodysFirstLine) {
  const std::string body = "not ready: draining\nmore\n";
  OneShotServer server(absl::StrCat(
      "HTTP/1.1 503 Service Unavailable\r\nContent-Length: ", body.size(), "\r\n\r\n", body));
  const absl::Status status = HttpCheck(server.Url("/readyz"), absl::Seconds(5));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("HTTP 503: not ready: draining"));
  EXPECT_THAT(status.message(), ::testing::Not(HasSubstr("more")));
}

TEST(HttpCheckTest, NothingListeningIsUnavailable) {
  uint16_t port = 0;
  {
    OneShotServer closed;  // a port that was free a moment ago
    port = closed.port();
  }
  const absl::Status status =
      HttpCheck(absl::StrCat("http://127.0.0.1:", port, "/"), absl::Seconds(5));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("127.0.0.1:", port)));
}

TEST(HttpCheckTest, ASilentServerIsADeadlineExceeded) {
  OneShotServer silent;
  const absl::Status status = HttpCheck(silent.Url("/readyz"), absl::Milliseconds(200));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(status.message(), HasSubstr("no answer within 200ms"));
}

TEST(HttpCheckTest, AnUnresolvableHostIsUnavailable) {
  const absl::Status status = HttpCheck("http://qpool-no-such-host.invalid:80/", absl::Seconds(5));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
}

TEST(HttpCheckTest, UnusableUrlsAreInvalidArguments) {
  for (const std::string url :
       {"https://127.0.0.1/readyz", "127.0.0.1:6336/readyz", "http://[::1/readyz",
        "http://127.0.0.1:0/", "http://127.0.0.1:65536/", "http://127.0.0.1:port/", "http://:6336/",
        "http:///readyz"}) {
    const absl::Status status = HttpCheck(url, absl::Seconds(1));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << url << ": " << status;
  }
  EXPECT_THAT(HttpCheck("http://[::1/", absl::Seconds(1)).message(), HasSubstr("missing ']'"));
}

TEST(HttpCheckTest, ABracketedIpv6HostWithoutAPortIsParsed) {
  // Port 80 on ::1: usually nothing listens (kUnavailable); what matters is that the URL was taken.
  const absl::Status status = HttpCheck("http://[::1]/readyz", absl::Seconds(1));
  EXPECT_NE(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

}  // namespace
}  // namespace qpool::metrics
