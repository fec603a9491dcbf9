// qdrant-emulator: an in-memory, Qdrant-compatible gRPC (and REST) server with fault injection, for
// qpool's tests, demo and load tests. Flags, signals and wiring only; see docs/emulator.md.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "emulator/control_api.h"
#include "emulator/control_http.h"
#include "emulator/faults.h"
#include "emulator/rest_server.h"
#include "emulator/server.h"
#include "emulator/storage.h"

namespace {

constexpr char kUsage[] = R"(usage: qdrant-emulator [flags]
  --listen ADDR                  gRPC address (default 127.0.0.1:6334; port 0 = any free port)
  --control-listen ADDR          control HTTP endpoint (default 127.0.0.1:0)
  --rest-listen ADDR             Qdrant's REST API (HTTP/1.1 + JSON) on ADDR; default off
                                 (port 0 = any free port)
  --rest-idle-timeout-ms N       close REST keep-alive connections idle N ms (default 0 = never)
  --rest-gzip-answers true|false gzip REST answers when Accept-Encoding allows, as Qdrant
                                 (default true)
  --port-file PATH               write "grpc=HOST:PORT control=HOST:PORT [rest=HOST:PORT]" there
                                 once bound
  --version V                    version reported by HealthCheck (default 1.19.0)
  --max-concurrent-streams N     HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (default 0 = unlimited)
  --goaway-grace-ms N            time calls may run after GOAWAY (default 5000)
  --faults JSON|@FILE            initial fault configuration (qpool.emulator.FaultConfig JSON)
  --seed N                       seed of the fault dice (default 1)
  --api-key KEY                  require metadata api-key: KEY on every call but HealthCheck
                                 (UNAUTHENTICATED otherwise, as Qdrant's service.api_key); on
                                 REST, header api-key or Authorization: Bearer on every route
                                 but GET /, /healthz, /livez, /readyz (401 otherwise)
  --read-only-api-key KEY        with --api-key: a key for reads only (a write with it is
                                 PERMISSION_DENIED / 403, as Qdrant's service.read_only_api_key)
  --tls-cert PEM --tls-key PEM   also serve gRPC over TLS (ALPN h2) on --tls-listen, and with
                                 --rest-listen the REST API over TLS on --rest-tls-listen
  --tls-listen ADDR              the TLS address (default 127.0.0.1:0)
  --rest-tls-listen ADDR         the REST TLS address (default 127.0.0.1:0)
  --rest-tls-alpn true|false     REST TLS agrees to ALPN http/1.1 (default true; false: no ALPN
                                 at all, as a server without ALPN support)
  --tls-client-ca PEM            require a client certificate signed by this CA (mTLS)
  --tls-reload-s N               re-read the TLS files every N seconds, for gRPC and REST; new
                                 connections get the new certificate (default 0: read once)
Prints "qdrant-emulator listening grpc=HOST:PORT control=HOST:PORT [rest=HOST:PORT]
[tls=HOST:PORT] [rest_tls=HOST:PORT]" on stdout when ready (the port file likewise).
Stops on SIGINT or SIGTERM.
)";

int Fail(const std::string& message) {
  std::cerr << "qdrant-emulator: " << message << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags = {{"listen", "127.0.0.1:6334"},
                                              {"control-listen", "127.0.0.1:0"},
                                              {"rest-listen", ""},
                                              {"rest-idle-timeout-ms", "0"},
                                              {"rest-gzip-answers", "true"},
                                              {"port-file", ""},
                                              {"version", "1.19.0"},
                                              {"max-concurrent-streams", "0"},
                                              {"goaway-grace-ms", "5000"},
                                              {"faults", ""},
                                              {"seed", "1"},
                                              {"api-key", ""},
                                              {"read-only-api-key", ""},
                                              {"tls-cert", ""},
                                              {"tls-key", ""},
                                              {"tls-listen", "127.0.0.1:0"},
                                              {"tls-client-ca", ""},
                                              {"rest-tls-listen", "127.0.0.1:0"},
                                              {"rest-tls-alpn", "true"},
                                              {"tls-reload-s", "0"}};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg.rfind("--", 0) != 0)
      return Fail(absl::StrCat("unexpected argument ", arg, "\n", kUsage));
    std::string name = arg.substr(2), value;
    size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return Fail(absl::StrCat("flag --", name, " needs a value"));
    }
    if (flags.count(name) == 0) return Fail(absl::StrCat("unknown flag --", name, "\n", kUsage));
    flags[name] = value;
  }

  qpool::emulator::ServerOptions options;
  options.listen = flags["listen"];
  options.handlers.version = flags["version"];
  options.api_key = flags["api-key"];
  options.read_only_api_key = flags["read-only-api-key"];
  if (!options.read_only_api_key.empty() && options.api_key.empty()) {
    return Fail("--read-only-api-key needs --api-key (as Qdrant's read_only_api_key)");
  }
  options.tls_cert_file = flags["tls-cert"];
  options.tls_key_file = flags["tls-key"];
  options.tls_listen = flags["tls-listen"];
  options.tls_client_ca_file = flags["tls-client-ca"];
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return Fail("--tls-cert and --tls-key go together");
  }
  if (!absl::SimpleAtoi(flags["tls-reload-s"], &options.tls_reload_seconds) ||
      options.tls_reload_seconds < 0) {
    return Fail("--tls-reload-s must be a number >= 0");
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    return Fail("--tls-client-ca needs --tls-cert and --tls-key");
  }
  uint64_t seed;
  int grace_ms;
  if (!absl::SimpleAtoi(flags["max-concurrent-streams"], &options.max_concurrent_streams) ||
      options.max_concurrent_streams < 0) {
    return Fail("--max-concurrent-streams must be a number >= 0");
  }
  if (!absl::SimpleAtoi(flags["goaway-grace-ms"], &grace_ms) || grace_ms < 0) {
    return Fail("--goaway-grace-ms must be a number >= 0");
  }
  options.goaway_grace = absl::Milliseconds(grace_ms);
  if (!absl::SimpleAtoi(flags["seed"], &seed)) return Fail("--seed must be a number");
  qpool::emulator::RestServerOptions rest_options;
  rest_options.listen = flags["rest-listen"];
  rest_options.api_key = options.api_key;
  rest_options.read_only_api_key = options.read_only_api_key;
  rest_options.tls_cert_file = options.tls_cert_file;
  rest_options.tls_key_file = options.tls_key_file;
  rest_options.tls_client_ca_file = options.tls_client_ca_file;
  rest_options.tls_reload_seconds = options.tls_reload_seconds;
  rest_options.tls_listen = flags["rest-tls-listen"];
  if (!absl::SimpleAtob(flags["rest-tls-alpn"], &rest_options.tls_alpn)) {
    return Fail("--rest-tls-alpn must be true or false");
  }
  int rest_idle_ms;
  if (!absl::SimpleAtoi(flags["rest-idle-timeout-ms"], &rest_idle_ms) || rest_idle_ms < 0) {
    return Fail("--rest-idle-timeout-ms must be a number >= 0");
  }
  rest_options.idle_timeout = absl::Milliseconds(rest_idle_ms);
  if (!absl::SimpleAtob(flags["rest-gzip-answers"], &rest_options.gzip_answers)) {
    return Fail("--rest-gzip-answers must be true or false");
  }

  qpool::emulator::FaultInjector faults(seed);
  if (std::string json = flags["faults"]; !json.empty()) {
    if (json[0] == '@') {
      std::ifstream file(json.substr(1));
      if (!file) return Fail(absl::StrCat("cannot read ", json.substr(1)));
      std::stringstream text;
      text << file.rdbuf();
      json = text.str();
    }
    if (absl::Status status = faults.SetConfigJson(json); !status.ok()) {
      return Fail(absl::StrCat("--faults: ", status.message()));
    }
  }

  // Signals are taken synchronously by sigwait below; block them before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  qpool::emulator::Storage storage;
  auto server = qpool::emulator::EmulatorServer::Start(options, storage, faults);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  std::unique_ptr<qpool::emulator::RestServer> rest;
  if (!rest_options.listen.empty()) {
    auto started =
        qpool::emulator::RestServer::Start(rest_options, storage, options.handlers, faults);
    if (!started.ok()) {
      return Fail(absl::StrCat("--rest-listen: ", started.status().message()));
    }
    rest = *std::move(started);
  }
  std::vector<qpool::emulator::Front*> fronts = {server->get()};
  if (rest != nullptr) fronts.push_back(rest.get());
  auto control = qpool::emulator::ControlHttpServer::Start(
      flags["control-listen"], qpool::emulator::MakeControlHandler(faults, fronts));
  if (!control.ok()) return Fail(std::string(control.status().message()));

  // The REST address goes last so that readers of "grpc=... control=..." keep working.
  std::string ports =
      absl::StrCat("grpc=", (*server)->address(), " control=", (*control)->address());
  if (rest != nullptr) absl::StrAppend(&ports, " rest=", rest->address());
  if (!(*server)->tls_address().empty()) absl::StrAppend(&ports, " tls=", (*server)->tls_address());
  if (rest != nullptr && !rest->tls_address().empty()) {
    absl::StrAppend(&ports, " rest_tls=", rest->tls_address());
  }
  if (const std::string& path = flags["port-file"]; !path.empty()) {
    std::string tmp = path + ".tmp";
    {
      std::ofstream file(tmp);
      file << ports << "\n";
      if (!file) return Fail(absl::StrCat("cannot write ", tmp));
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      return Fail(absl::StrCat("cannot write ", path));
  }
  std::cout << "qdrant-emulator listening " << ports << std::endl;

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::cerr << "qdrant-emulator: stopping on signal " << signal_number << "\n";
  control->reset();
  for (auto front = fronts.rbegin(); front != fronts.rend(); ++front) (*front)->Shutdown();
  return 0;
}
