// qpoold: flags, config, logging, signals and the proxy's life cycle. Wiring only; the one file
// tests never link.
//
// Signals, all taken by the main thread with sigwait:
//   SIGTERM, SIGINT  drain (after server.drain_delay) and exit 0; a second one exits at once
//   SIGHUP           reload the config (file, QPOOL_* environment, the original flags): apply it
//                    live as a whole (all but the listen addresses and server.workers), or keep
//                    the running config and say why
//   SIGUSR1          internal wake-up: the drain finished, or POST /quitquitquit asked for one
//
// Exit codes: 0 after a clean stop (or a good --check-config / --print-config / --help /
// --version); 1 when the configuration is refused or the proxy cannot start; 2 for a malformed
// command line; 128+signal when a second SIGTERM/SIGINT cuts the drain short.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "daemon/common/access_log.h"
#include "daemon/common/logging.h"
#include "daemon/config/config.h"
#include "daemon/config/loader.h"
#include "daemon/metrics/admin_server.h"
#include "daemon/metrics/http_check.h"
#include "daemon/metrics/reload_metrics.h"
#include "daemon/server/proxy.h"
#include "spdlog/spdlog.h"

namespace {

// Wakes the main thread's sigwait: sent by the shutdown thread when Proxy::Shutdown() has returned,
// and by the admin thread for POST /quitquitquit. The flags say which.
constexpr int kWakeSignal = SIGUSR1;

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
    case SIGHUP:
      return "SIGHUP";
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

// The --config file's bytes, or nullopt when it cannot be read (config.watch_interval compares
// them between polls).
std::optional<std::string> ReadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

// SIGHUP: builds the config again from the same sources and applies what can change live. Any
// error, or a changed key that needs a restart, keeps the running config as a whole.
void Reload(const qpool::config::CommandLine& command_line,
            std::shared_ptr<const qpool::config::Config>& current, qpool::server::Proxy& proxy,
            qpool::metrics::ConfigReloadMetrics& reloads) {
  absl::StatusOr<qpool::config::Config> built = qpool::config::BuildConfig(command_line);
  if (!built.ok()) {
    reloads.RecordFailure();
    spdlog::error("config reload failed, the running config stays in force: {}",
                  std::string(built.status().message()));
    return;
  }
  const std::vector<std::string> changed = qpool::config::ChangedKeys(*current, *built);
  std::vector<std::string> need_restart;
  for (const std::string& key : changed) {
    if (!qpool::config::ReloadableKey(key)) need_restart.push_back(key);
  }
  if (!need_restart.empty()) {
    std::vector<std::string> live;
    for (const std::string& key : qpool::config::ConfigKeyNames()) {
      if (qpool::config::ReloadableKey(key)) live.push_back(key);
    }
    reloads.RecordFailure();
    spdlog::error(
        "config reload refused, the running config stays in force: {} cannot change while "
        "qpoold runs (needs a restart); a reload applies only {}",
        absl::StrJoin(need_restart, ", "), absl::StrJoin(live, ", "));
    return;
  }
  auto next = std::make_shared<const qpool::config::Config>(*built);
  if (absl::Status status = proxy.Reconfigure(next); !status.ok()) {
    reloads.RecordFailure();
    spdlog::error("config reload failed, the running config stays in force: {}",
                  std::string(status.message()));
    return;
  }
  // Validated already, so neither call can fail on the value; a failure is logged, not fatal.
  if (built->log.level != current->log.level) {
    if (absl::Status status = qpool::SetLogLevel(built->log.level); !status.ok()) {
      spdlog::error("config reload: log.level: {}", status.ToString());
    }
  }
  if (built->log.format != current->log.format) {
    if (absl::Status status = qpool::SetLogFormat(built->log.format); !status.ok()) {
      spdlog::error("config reload: log.format: {}", status.ToString());
    }
  }
  qpool::SetAccessLogSample(built->log.access_log_sample);
  std::vector<std::string> descriptions;
  for (const std::string& key : changed) {
    descriptions.push_back(qpool::config::DescribeChange(*current, *built, key));
  }
  current = std::move(next);
  reloads.RecordSuccess(absl::Now());
  if (descriptions.empty()) {
    spdlog::info("config reloaded: nothing changed");
  } else {
    spdlog::info("config reloaded: {}", absl::StrJoin(descriptions, "; "));
  }
}

constexpr char kHealthcheckUsage[] =
    "Usage: qpoold healthcheck [--url URL] [--timeout DURATION]\n"
    "GETs URL (default http://127.0.0.1:6336/readyz, qpoold's default admin address) and exits 0\n"
    "on a 2xx answer within the timeout (default 2s), 1 otherwise; for a container HEALTHCHECK.\n";

// `qpoold healthcheck`: a probe of a running qpoold's admin endpoint, for images without curl.
int RunHealthcheck(int argc, char** argv) {
  std::string url = "http://127.0.0.1:6336/readyz";
  absl::Duration timeout = absl::Seconds(2);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string value;
    std::string name = arg;
    if (size_t equals = arg.find('='); equals != std::string::npos) {
      name = arg.substr(0, equals);
      value = arg.substr(equals + 1);
    } else if ((arg == "--url" || arg == "--timeout") && i + 1 < argc) {
      value = argv[++i];
    }
    if (name == "--help") {
      std::fputs(kHealthcheckUsage, stdout);
      return 0;
    }
    if (name == "--url" && !value.empty()) {
      url = value;
    } else if (name == "--timeout" && absl::ParseDuration(value, &timeout) &&
               timeout > absl::ZeroDuration()) {
    } else {
      std::fprintf(stderr, "qpoold healthcheck: bad argument \"%s\"\n%s", arg.c_str(),
                   kHealthcheckUsage);
      return 2;
    }
  }
  if (absl::Status status = qpool::metrics::HttpCheck(url, timeout); !status.ok()) {
    std::fprintf(stderr, "qpoold healthcheck: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

int Run(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "healthcheck") == 0) {
    return RunHealthcheck(argc - 1, argv + 1);
  }
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
  // Read before the config is built from it: a change in between shows as a change later.
  std::optional<std::string> watched_file;
  if (command_line->config_path) watched_file = ReadConfigFile(*command_line->config_path);
  absl::StatusOr<qpool::config::Config> built = qpool::config::BuildConfig(*command_line);
  if (command_line->print_config) {
    if (!built.ok()) {
      PrintError(built.status());
      return 1;
    }
    std::fputs(qpool::config::PrintConfig(*built).c_str(), stdout);
    return 0;
  }
  if (command_line->check_config) {
    // Like `nginx -t`: the verdict on stdout when good, the reason on stderr when not.
    absl::Status status = built.ok() ? qpool::server::CheckUpstreamSecrets(*built) : built.status();
    if (!status.ok()) {
      PrintError(status);
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
  // The config in force: replaced by a successful reload; the proxy keeps its own start-up copy
  // for what cannot change live.
  auto config = std::make_shared<const qpool::config::Config>(*std::move(built));
  qpool::metrics::ConfigReloadMetrics reloads;
  reloads.RecordInitialLoad(absl::Now());

  if (absl::Status status = qpool::SetupLogging(config->log.level, config->log.format);
      !status.ok()) {
    PrintError(status);
    return 1;
  }
  qpool::SetAccessLogSample(config->log.access_log_sample);

  // Signals are taken synchronously by this thread (sigwait below). The mask is set before any
  // thread exists, so every worker the proxy starts inherits it and none is interrupted.
  std::signal(SIGPIPE, SIG_IGN);  // a peer that hangs up is an error return, not a death
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);  // reload; its default action would kill qpoold
  sigaddset(&signals, kWakeSignal);
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
  admin_options.reloads = &reloads;
  const pthread_t main_thread = pthread_self();
  std::atomic<bool> quit_requested{false};
  admin_options.on_quit = [&quit_requested, main_thread] {
    quit_requested.store(true, std::memory_order_release);
    pthread_kill(main_thread, kWakeSignal);
  };
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
  if ((*proxy)->rest_port() != 0) {
    const qpool::config::NodeAddress rest_bound{config->rest.listen.host, (*proxy)->rest_port()};
    spdlog::info("REST front door at http://{} (rest.listen)", rest_bound.ToString());
  }

  std::thread shutdown_thread;
  std::atomic<bool> shutdown_done{false};
  absl::Status shutdown_status;  // written by shutdown_thread before shutdown_done
  // The first stop request: /readyz turns 503 at once; after server.drain_delay the drain starts.
  auto start_shutdown = [&](const char* why) {
    const absl::Duration delay = config->server.drain_delay;
    if (delay > absl::ZeroDuration()) {
      (*proxy)->MarkDraining();
      spdlog::info(
          "{}: /readyz answers 503; serving as usual for {} (server.drain_delay), then draining "
          "for up to {} (a second SIGTERM/SIGINT exits at once)",
          why, absl::FormatDuration(delay), absl::FormatDuration(config->server.drain_timeout));
    } else {
      spdlog::info("{}: draining for up to {} (a second SIGTERM/SIGINT exits at once)", why,
                   absl::FormatDuration(config->server.drain_timeout));
    }
    shutdown_thread = std::thread([&, delay] {
      if (delay > absl::ZeroDuration()) {
        absl::SleepFor(delay);  // a second signal _Exits the process meanwhile
        spdlog::info("server.drain_delay over: draining");
      }
      shutdown_status = (*proxy)->Shutdown();
      shutdown_done.store(true, std::memory_order_release);
      pthread_kill(main_thread, kWakeSignal);
    });
  };
  for (;;) {
    int signal_number = 0;
    const absl::Duration watch = config->config.watch_interval;
    if (watch > absl::ZeroDuration() && command_line->config_path && !shutdown_thread.joinable()) {
      // config.watch_interval: wait for a signal at most that long, then look at the file.
      const timespec timeout = absl::ToTimespec(watch);
      signal_number = sigtimedwait(&signals, nullptr, &timeout);
      if (signal_number < 0 && errno == EINTR) continue;
      if (signal_number < 0 && errno == EAGAIN) {
        std::optional<std::string> now = ReadConfigFile(*command_line->config_path);
        if (now != watched_file) {
          // Once per change: a broken file is one failed reload, not one per poll.
          watched_file = std::move(now);
          spdlog::info("{} changed (config.watch_interval): reloading", source);
          Reload(*command_line, config, **proxy, reloads);
        }
        continue;
      }
      if (signal_number < 0) {
        spdlog::critical("sigtimedwait failed: {}", std::strerror(errno));
        std::_Exit(1);
      }
    } else if (int error = sigwait(&signals, &signal_number); error != 0) {
      spdlog::critical("sigwait failed: {}", std::strerror(error));
      std::_Exit(1);
    }
    if (signal_number == kWakeSignal) {
      // Both may be pending behind one delivery; a stray SIGUSR1 finds neither.
      if (quit_requested.exchange(false, std::memory_order_acq_rel) &&
          !shutdown_thread.joinable()) {
        start_shutdown("POST /quitquitquit");
      }
      if (shutdown_done.load(std::memory_order_acquire)) break;
      continue;
    }
    if (signal_number == SIGHUP) {
      if (shutdown_thread.joinable()) {
        spdlog::warn("SIGHUP: stopping, config reload ignored");
      } else {
        spdlog::info("SIGHUP: reloading the config from {}", source);
        if (command_line->config_path) watched_file = ReadConfigFile(*command_line->config_path);
        Reload(*command_line, config, **proxy, reloads);
      }
      continue;
    }
    // SIGTERM or SIGINT.
    if (shutdown_thread.joinable()) {
      spdlog::warn("second {}: exiting now, cutting off in-flight calls",
                   SignalName(signal_number));
      spdlog::default_logger()->flush();
      std::_Exit(128 + signal_number);
    }
    start_shutdown(SignalName(signal_number));
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
