// qpoold: flags, config, logging, signals and the proxy's life cycle. Wiring only; the one file
// tests never link.
//
// Exit codes: 0 after a clean stop (or a good --check-config / --help / --version); 1 when the
// configuration is refused or the proxy cannot start; 2 for a malformed command line; 128+signal
// when a second SIGTERM/SIGINT cuts the drain short.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/common/logging.h"
#include "daemon/config/config.h"
#include "daemon/config/loader.h"
#include "daemon/metrics/admin_server.h"
#include "daemon/server/proxy.h"
#include "spdlog/spdlog.h"

namespace {

// Sent by the shutdown thread to the main thread when Proxy::Shutdown() has returned.
constexpr int kShutdownDoneSignal = SIGUSR1;

void PrintError(const absl::Status& status) {
  std::fprintf(stderr, "qpoold: %.*s\n", static_cast<int>(status.message().size()),
               status.message().data());
}

const char* SignalName(int signal_number) {
  switch (signal_number) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    default:
      return "signal";
  }
}

std::string Upstreams(const qpool::config::Config& config) {
  return absl::StrJoin(config.upstream.nodes, ", ",
                       [](std::string* out, const qpool::config::NodeAddress& node) {
                         out->append(node.ToString());
                       });
}

int Run(int argc, char** argv) {
  absl::StatusOr<qpool::config::CommandLine> command_line =
      qpool::config::ParseCommandLine(argc, argv);
  if (!command_line.ok()) {
    PrintError(command_line.status());
    std::fprintf(stderr, "Try 'qpoold --help'.\n");
    return 2;
  }
  if (command_line->help) {
    std::fputs(qpool::config::UsageText().c_str(), stdout);
    return 0;
  }
  if (command_line->version) {
    std::printf("qpoold %s\n", QPOOL_VERSION);
    return 0;
  }

  const std::string source = command_line->config_path.value_or("flags");
  absl::StatusOr<qpool::config::Config> built = qpool::config::BuildConfig(*command_line);
  if (command_line->check_config) {
    // Like `nginx -t`: the verdict on stdout when good, the reason on stderr when not.
    if (!built.ok()) {
      PrintError(built.status());
      std::fprintf(stderr, "qpoold: configuration test failed: %s\n", source.c_str());
      return 1;
    }
    std::printf("qpoold: configuration OK: %s\n", source.c_str());
    return 0;
  }
  if (!built.ok()) {
    PrintError(built.status());
    return 1;
  }
  auto config = std::make_shared<const qpool::config::Config>(*std::move(built));

  if (absl::Status status = qpool::SetupLogging(config->log.level, config->log.format);
      !status.ok()) {
    PrintError(status);
    return 1;
  }

  // Signals are taken synchronously by this thread (sigwait below). The mask is set before any
  // thread exists, so every worker the proxy starts inherits it and none is interrupted.
  std::signal(SIGPIPE, SIG_IGN);  // a peer that hangs up is an error return, not a death
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, kShutdownDoneSignal);
  if (int error = pthread_sigmask(SIG_BLOCK, &signals, nullptr); error != 0) {
    spdlog::critical("cannot block signals: {}", std::strerror(error));
    return 1;
  }

  absl::StatusOr<std::unique_ptr<qpool::server::Proxy>> proxy =
      qpool::server::Proxy::Create(config);
  if (!proxy.ok()) {
    spdlog::critical("cannot create the proxy: {}", proxy.status().ToString());
    return 1;
  }
  // The admin endpoint comes up first, so that /startupz and /readyz answer 503 while the proxy
  // starts; it goes down last, after the drain, so /readyz says "draining" meanwhile.
  qpool::metrics::AdminServerOptions admin_options;
  admin_options.host = config->admin.listen.host;
  admin_options.port = config->admin.listen.port;
  admin_options.version = QPOOL_VERSION;
  absl::StatusOr<std::unique_ptr<qpool::metrics::AdminServer>> admin =
      qpool::metrics::AdminServer::Start(admin_options, **proxy);
  if (!admin.ok()) {
    // An admin.listen that was set is a promise to the operator: fail. The default may be taken
    // by another qpoold on the same host (a developer's, a test's): warn and run without it.
    const qpool::config::NodeAddress default_admin = qpool::config::AdminConfig().listen;
    const bool is_default = config->admin.listen.host == default_admin.host &&
                            config->admin.listen.port == default_admin.port;
    if (!is_default) {
      spdlog::critical("cannot start the admin endpoint: {}", admin.status().ToString());
      return 1;
    }
    spdlog::warn(
        "no admin endpoint (/metrics, /readyz, ...): {}; set admin.listen or "
        "--admin-listen to choose another address",
        std::string(admin.status().message()));
  }
  if (absl::Status status = (*proxy)->Start(); !status.ok()) {
    spdlog::critical("cannot start: {}", status.ToString());
    return 1;
  }
  const qpool::config::NodeAddress bound{config->server.listen.host, (*proxy)->port()};
  const qpool::config::NodeAddress admin_bound{config->admin.listen.host,
                                               admin.ok() ? (*admin)->port() : uint16_t{0}};
  spdlog::info("listening on {} (upstream: {}), admin on {}, version {}", bound.ToString(),
               Upstreams(*config), admin.ok() ? "http://" + admin_bound.ToString() + "/" : "none",
               QPOOL_VERSION);

  const pthread_t main_thread = pthread_self();
  std::thread shutdown_thread;
  std::atomic<bool> shutdown_done{false};
  absl::Status shutdown_status;  // written by shutdown_thread before shutdown_done
  for (;;) {
    int signal_number = 0;
    if (int error = sigwait(&signals, &signal_number); error != 0) {
      spdlog::critical("sigwait failed: {}", std::strerror(error));
      std::_Exit(1);
    }
    if (signal_number == kShutdownDoneSignal) {
      if (!shutdown_done.load(std::memory_order_acquire)) continue;  // a stray SIGUSR1
      break;
    }
    // SIGTERM or SIGINT.
    if (shutdown_thread.joinable()) {
      spdlog::warn("second {}: exiting now, cutting off in-flight calls",
                   SignalName(signal_number));
      spdlog::default_logger()->flush();
      std::_Exit(128 + signal_number);
    }
    spdlog::info("{}: draining for up to {} (send it again to exit at once)",
                 SignalName(signal_number), absl::FormatDuration(config->server.drain_timeout));
    shutdown_thread = std::thread([&] {
      shutdown_status = (*proxy)->Shutdown();
      shutdown_done.store(true, std::memory_order_release);
      pthread_kill(main_thread, kShutdownDoneSignal);
    });
  }
  shutdown_thread.join();
  if (shutdown_status.ok()) {
    spdlog::info("stopped: every call finished");
  } else {
    spdlog::warn("stopped: some calls were cut off: {}", shutdown_status.ToString());
  }
  if (admin.ok()) (*admin)->Stop();
  proxy->reset();
  spdlog::default_logger()->flush();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
