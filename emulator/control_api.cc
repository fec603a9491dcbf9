#include "emulator/control_api.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace qpool::emulator {
namespace {

HttpResponse Error(int status, absl::string_view message) {
  return HttpResponse{
      status, absl::StrCat(R"({"error":")",
                           absl::StrReplaceAll(message, {{"\\", "\\\\"}, {"\"", "\\\""}}), "\"}")};
}

HttpResponse Ok() { return HttpResponse{200, R"({"ok":true})"}; }

}  // namespace

ControlHttpServer::Handler MakeControlHandler(FaultInjector& faults, std::vector<Front*> fronts) {
  auto release = [fronts] {
    for (Front* front : fronts) front->ReleaseParkedCalls();
  };
  auto close = [fronts](CloseMode mode) {
    for (Front* front : fronts) front->CloseConnections(mode);
  };
  return [&faults, release, close](const HttpRequest& request) -> HttpResponse {
    const std::string& path = request.path;
    bool get = request.method == "GET";
    bool post = request.method == "POST";
    if (path == "/healthz" && get) return Ok();
    if (path == "/counters" && get) return HttpResponse{200, faults.CountersJson()};
    if (path == "/counters/reset" && post) {
      faults.ResetCounters();
      return Ok();
    }
    if (path == "/faults" && get) return HttpResponse{200, faults.ConfigJson()};
    if (path == "/faults" && (post || request.method == "PUT")) {
      absl::Status status = faults.SetConfigJson(request.body.empty() ? "{}" : request.body);
      if (!status.ok()) return Error(400, status.message());
      release();  // Calls parked by a rule that is gone now proceed.
      return HttpResponse{200, faults.ConfigJson()};
    }
    if (path == "/hang" && post) {
      faults.SetHangAll(true);
      return Ok();
    }
    if (path == "/resume" && post) {
      faults.SetHangAll(false);
      release();
      return Ok();
    }
    if (path == "/connections/close" && post) {
      if (request.query.empty() || request.query == "mode=goaway") {
        close(CloseMode::kGoaway);
      } else if (request.query == "mode=abrupt") {
        close(CloseMode::kAbrupt);
      } else {
        return Error(400, "mode must be goaway or abrupt");
      }
      return Ok();
    }
    return Error(404, absl::StrCat("no route ", request.method, " ", path));
  };
}

}  // namespace qpool::emulator
