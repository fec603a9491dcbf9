#include "emulator/control_http.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "emulator/net.h"

namespace qpool::emulator {
namespace {

constexpr size_t kMaxRequestBytes = 1 << 20;
constexpr int kIoTimeoutMs = 5000;

// Reads until `want` returns true or the peer stops; false on timeout, error or overflow.
bool ReadMore(int fd, std::string* buffer) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, kIoTimeoutMs) <= 0) return false;
  char chunk[16384];
  ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
  if (n <= 0) return false;
  buffer->append(chunk, n);
  return buffer->size() <= kMaxRequestBytes;
}

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    default:
      return "Error";
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControlHttpServer>> ControlHttpServer::Start(
    const std::string& address, Handler handler) {
  absl::StatusOr<int> fd = ListenTcp(address);
  if (!fd.ok()) return fd.status();
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::unique_ptr<ControlHttpServer> server(new ControlHttpServer(*fd, wake, std::move(handler)));
  server->thread_ = std::thread([s = server.get()] { s->Run(); });
  return server;
}

ControlHttpServer::ControlHttpServer(int listen_fd, int wake_fd, Handler handler)
    : listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      handler_(std::move(handler)),
      address_(LocalAddress(listen_fd)) {}

ControlHttpServer::~ControlHttpServer() {
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  close(listen_fd_);
  close(wake_fd_);
}

void ControlHttpServer::Run() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    Serve(fd);
    close(fd);
  }
}

void ControlHttpServer::Serve(int fd) {
  std::string buffer;
  size_t header_end;
  while ((header_end = buffer.find("\r\n\r\n")) == std::string::npos) {
    if (!ReadMore(fd, &buffer)) return;
  }
  HttpRequest request;
  std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(buffer).substr(0, header_end), "\r\n");
  std::vector<std::string> start = absl::StrSplit(lines[0], ' ');
  HttpResponse response{400, R"({"error":"malformed request"})"};
  size_t content_length = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) continue;
    if (absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(lines[i].substr(0, colon)),
                               "content-length")) {
      (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)),
                             &content_length);
    }
  }
  if (start.size() == 3 && content_length <= kMaxRequestBytes) {
    while (buffer.size() < header_end + 4 + content_length) {
      if (!ReadMore(fd, &buffer)) return;
    }
    request.method = start[0];
    std::pair<std::string, std::string> target = absl::StrSplit(start[1], absl::MaxSplits('?', 1));
    request.path = target.first;
    request.query = target.second;
    request.body = buffer.substr(header_end + 4, content_length);
    response = handler_(request);
  }
  std::string out =
      absl::StrCat("HTTP/1.1 ", response.status, " ", Reason(response.status),
                   "\r\nContent-Type: application/json\r\nContent-Length: ", response.body.size(),
                   "\r\nConnection: close\r\n\r\n", response.body);
  size_t sent = 0;
  while (sent < out.size()) {
    ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += n;
  }
}

}  // namespace qpool::emulator
