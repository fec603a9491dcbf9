// A minimal HTTP/1.1 server for the emulator's control endpoint: one thread, one request per
// connection (answers carry `Connection: close`), bodies up to 1 MiB. Enough for curl and tests;
// not a general web server.
//
//   auto server = ControlHttpServer::Start("127.0.0.1:0", [](const HttpRequest& r) {
//     return HttpResponse{200, "{}"};
//   });
//
// Thread-safety: the handler runs on the server's thread, one request at a time.
#ifndef QPOOL_EMULATOR_CONTROL_HTTP_H_
#define QPOOL_EMULATOR_CONTROL_HTTP_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace qpool::emulator {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // Without the query string.
  std::string query;   // After '?', or empty.
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string body;  // Sent as application/json.
};

class ControlHttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  static absl::StatusOr<std::unique_ptr<ControlHttpServer>> Start(const std::string& address,
                                                                  Handler handler);
  ~ControlHttpServer();  // Stops the thread and closes the socket.

  const std::string& address() const { return address_; }

 private:
  ControlHttpServer(int listen_fd, int wake_fd, Handler handler);
  void Run();
  void Serve(int fd);

  const int listen_fd_;
  const int wake_fd_;  // eventfd; written to stop Run().
  const Handler handler_;
  std::string address_;
  std::thread thread_;
};

}  // namespace qpool::emulator

#endif  // QPOOL_EMULATOR_CONTROL_HTTP_H_
