// Secure upstream end to end (issue 13): the built qpoold, reached in cleartext by a gRPC client,
// in front of the built qdrant-emulator serving gRPC over TLS and/or requiring API keys; every
// port picked at run time, certificates made at run time by tests/e2e/tls/make_certs.sh (the
// `openssl` command).
//  - Tls*: valid chain; expired, unknown CA and wrong name each fail UNAVAILABLE with the reason in
//    the message and in qpool_upstream_tls_failures_total; verify: false connects and is counted;
//    mTLS with and without a client certificate; a CA file swapped like a Kubernetes Secret is
//    picked up for new connections; gentle closes (recycling) end with a TLS close_notify that a
//    test TLS node (TlsH2Stub) sees, and sessions still resume.
//  - RestTls*: REST over TLS (keys per read/write class, each bad certificate a 503 with its
//    reason, a server without ALPN), session resumption on reconnects (REST and gRPC), a new CA
//    file, or a reload naming another CA file, recycling open connections under load without a
//    failed call, the node moved to a
//    certificate from a new CA under REST and gRPC load (no failed call; new connections shown
//    the new chain, in qpoold's log and in the emulator's counters), gentle closes ending with a
//    close_notify the emulator counts, a retry keeping the key its call started with.
//  - Keys*: rotation of the key file under load (8 clients) fails no call; the read-only key goes
//    on reads and the full key on writes (the emulator's per-key counters); override vs if_absent;
//    no key ever appears in the log (trace level), /metrics, /pool, error messages or
//    --check-config output.
// Without openssl the Tls* tests are SKIPPED (ctest: not run).
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qdrant/collections_service.grpc.pb.h"
#include "tests/support/emulator_process.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/test_certs.h"
#include "tests/support/test_load.h"
#include "tests/support/test_util.h"
#include "tests/unit/http_get.h"

namespace qpool::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const auto* const kCerts = ::qpool::testing::RegisterTestCerts("qpool_tls_e2e");

// Writes `text` to `path` as a Secret update does: a new file renamed over the old one.
void Replace(const std::string& path, const std::string& text) {
  std::ofstream(path + ".tmp") << text;
  ASSERT_EQ(std::rename((path + ".tmp").c_str(), path.c_str()), 0) << std::strerror(errno);
}

class SecureUpstreamE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = ::testing::TempDir() + "/qpoold_secure_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr) << std::strerror(errno);
    dir_ = dir;
    log_path_ = dir_ + "/qpoold.log";
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "qpoold's log:\n" << ReadFileOrEmpty(log_path_) << "\n";
      std::cerr << "emulator's log:\n" << ReadFileOrEmpty(dir_ + "/emulator.log") << "\n";
    }
    stub_.reset();
    channel_.reset();
    StopQpoold();
    emulator_.reset();  // SIGKILL
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  void StopQpoold() {
    if (qpoold_ == nullptr) return;
    (void)qpoold_->Signal(SIGTERM);
    if (!qpoold_->WaitForExit(absl::Seconds(10))) qpoold_->Kill();
    qpoold_.reset();
  }

  void StartEmulator(std::vector<std::string> flags) {
    flags.insert(flags.begin(), {"--listen", "127.0.0.1:0"});
    auto process = EmulatorProcess::Start(QDRANT_EMULATOR_PATH, flags, dir_ + "/emulator.log");
    ASSERT_TRUE(process.ok()) << process.status();
    emulator_ = std::move(*process);
    grpc_port_ = emulator_->Port("grpc");
    control_port_ = emulator_->control_port();
    tls_port_ = emulator_->Port("tls");
    rest_port_ = emulator_->Port("rest");
    rest_tls_port_ = emulator_->Port("rest_tls");
  }

  // Starts qpoold with one node (the emulator's TLS port when `tls`, else its cleartext port),
  // `upstream` more lines under `upstream:` (two spaces in), and `extra` more sections.
  void StartQpoold(bool tls, const std::string& upstream, const std::string& extra = "") {
    listen_port_ = PickFreePort();
    admin_port_ = PickFreePort();
    node_ = absl::StrCat("127.0.0.1:", tls ? tls_port_ : grpc_port_);
    config_path_ = dir_ + "/qpool.yaml";
    std::ofstream(config_path_) << "server:\n  listen: \"127.0.0.1:" << listen_port_ << "\"\n"
                                << "admin:\n  listen: \"127.0.0.1:" << admin_port_ << "\"\n"
                                << "rest:\n  listen: \"\"\n"  // REST off: no fixed port 6333
                                << "upstream:\n  nodes: [\"" << node_ << "\"]\n"
                                << "  connect_timeout: 1s\n  connect_backoff_max: 200ms\n"
                                << upstream << extra;
    auto qpoold = Subprocess::Spawn({QPOOLD_PATH, "--config", config_path_}, log_path_);
    ASSERT_TRUE(qpoold.ok()) << qpoold.status();
    qpoold_ = std::move(*qpoold);
    ASSERT_TRUE(WaitFor([&] { return CanConnect(listen_port_) && CanConnect(admin_port_); },
                        absl::Seconds(15)))
        << ReadFileOrEmpty(log_path_);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", listen_port_),
                                   grpc::InsecureChannelCredentials());
    stub_ = qdrant::Collections::NewStub(channel_);
  }

  // As StartQpoold, with the REST front door on (a free port) and the emulator's REST endpoint,
  // its TLS one when `tls`, as the node's REST endpoint.
  void StartQpooldRest(bool tls, const std::string& upstream, const std::string& extra = "") {
    listen_port_ = PickFreePort();
    admin_port_ = PickFreePort();
    qp_rest_port_ = PickFreePort();
    node_ = absl::StrCat("127.0.0.1:", tls ? tls_port_ : grpc_port_);
    rest_node_ = absl::StrCat("127.0.0.1:", tls ? rest_tls_port_ : rest_port_);
    config_path_ = dir_ + "/qpool.yaml";
    std::ofstream(config_path_) << "server:\n  listen: \"127.0.0.1:" << listen_port_ << "\"\n"
                                << "admin:\n  listen: \"127.0.0.1:" << admin_port_ << "\"\n"
                                << "rest:\n  listen: \"127.0.0.1:" << qp_rest_port_ << "\"\n"
                                << "upstream:\n  nodes: [\"" << node_ << "\"]\n"
                                << "  rest_nodes: [\"" << rest_node_ << "\"]\n"
                                << "  connect_timeout: 1s\n  connect_backoff_max: 200ms\n"
                                << upstream << extra;
    auto qpoold = Subprocess::Spawn({QPOOLD_PATH, "--config", config_path_}, log_path_);
    ASSERT_TRUE(qpoold.ok()) << qpoold.status();
    qpoold_ = std::move(*qpoold);
    ASSERT_TRUE(WaitFor(
        [&] {
          return CanConnect(listen_port_) && CanConnect(admin_port_) && CanConnect(qp_rest_port_);
        },
        absl::Seconds(15)))
        << ReadFileOrEmpty(log_path_);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", listen_port_),
                                   grpc::InsecureChannelCredentials());
    stub_ = qdrant::Collections::NewStub(channel_);
  }

  // A REST request to qpoold's front door.
  HttpReply Rest(const std::string& method, const std::string& target,
                 const std::string& body = "") {
    return HttpRequest(qp_rest_port_, method, target, body);
  }
  // A metric of the node's REST endpoint.
  double RestMetric(const std::string& name, const std::string& labels = "") {
    return Scrape()[absl::StrCat(name, "{node=\"", rest_node_, "\"", labels, "}")];
  }

  static std::string TlsYaml(const std::string& lines) {
    return absl::StrCat("  tls:\n    enabled: true\n", lines);
  }

  // Calls from `threads` clients, at most `max_calls` each, until Stop(): gRPC CollectionExists,
  // or with `rest_too` REST GET /collections from every other client.
  std::unique_ptr<ThreadedLoad> Load(int threads, int max_calls, bool rest_too = false) {
    return std::make_unique<ThreadedLoad>(
        threads, max_calls, [this, rest_too](int thread) -> ThreadedLoad::Caller {
          if (rest_too && thread % 2 == 1) {
            return [this](int) {
              const HttpReply reply = Rest("GET", "/collections");
              return reply.status == 200 ? std::string()
                                         : absl::StrCat("REST ", reply.status, " ", reply.body);
            };
          }
          return [this](int) {
            const grpc::Status status = Exists();
            return status.ok() ? std::string()
                               : absl::StrCat(status.error_code(), ": ", status.error_message());
          };
        });
  }

  grpc::Status Exists(const std::string& key = "", absl::Duration timeout = absl::Seconds(5)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
    if (!key.empty()) ctx.AddMetadata("api-key", key);
    qdrant::CollectionExistsRequest request;
    request.set_collection_name("secure_e2e");
    qdrant::CollectionExistsResponse reply;
    return stub_->CollectionExists(&ctx, request, &reply);
  }

  grpc::Status Create(const std::string& name) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    qdrant::CreateCollection request;
    request.set_collection_name(name);
    auto* params = request.mutable_vectors_config()->mutable_params();
    params->set_size(4);
    params->set_distance(qdrant::Distance::Cosine);
    qdrant::CollectionOperationResponse reply;
    return stub_->Create(&ctx, request, &reply);
  }

  Samples Scrape() { return ParseSamples(HttpGet(admin_port_, "/metrics").body); }
  double Metric(const std::string& name, const std::string& labels = "") {
    return Scrape()[absl::StrCat(name, "{node=\"", node_, "\"", labels, "}")];
  }

  // The emulator's calls by key label ("full", "read_only", "none", "refused").
  int KeyCount(const std::string& label) { return EmulatorCount("calls_by_key", label); }
  // Entry `label` of the emulator's counter map `map` (GET /counters), 0 when absent.
  int EmulatorCount(const std::string& map, const std::string& label) {
    const std::string body = HttpGet(control_port_, "/counters").body;
    const size_t at_map = body.find("\"" + map + "\":{");
    if (at_map == std::string::npos) return 0;
    const size_t end = body.find('}', at_map);
    const std::string key = "\"" + label + "\":";
    const size_t at = body.find(key, at_map);
    if (at == std::string::npos || at > end) return 0;
    return std::atoi(body.c_str() + at + key.size());
  }
  void ResetCounters() {
    ASSERT_EQ(HttpRequest(control_port_, "POST", "/counters/reset").status, 200);
  }

  std::string dir_;
  std::string log_path_;
  std::string config_path_;
  std::string node_;
  uint16_t grpc_port_ = 0;
  uint16_t tls_port_ = 0;
  uint16_t rest_port_ = 0;      // the emulator's REST port (with --rest-listen)
  uint16_t rest_tls_port_ = 0;  // its REST TLS port (with --rest-listen and --tls-cert)
  uint16_t qp_rest_port_ = 0;   // qpoold's REST front door (StartQpooldRest)
  std::string rest_node_;
  uint16_t control_port_ = 0;
  uint16_t listen_port_ = 0;
  uint16_t admin_port_ = 0;
  std::unique_ptr<EmulatorProcess> emulator_;
  std::unique_ptr<Subprocess> qpoold_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<qdrant::Collections::Stub> stub_;
};

// --- TLS -----------------------------------------------------------------------------------------

// A TLS node stand-in (OpenSSL, ALPN h2, certificate `cert`) speaking just enough HTTP/2 for
// qpoold's pool to count a connection as up (its SETTINGS frame), which records how each
// connection ended: with the client's TLS close_notify (SSL_ERROR_ZERO_RETURN), or without
// (a FIN or reset alone, or its 10 s read timeout). At most 64 connections; each on a thread.
class TlsH2Stub {
 public:
  explicit TlsH2Stub(const std::string& cert) {
    // OpenSSL writes to sockets with write(): a peer gone must not kill the test with SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    ctx_ = SSL_CTX_new(TLS_server_method());
    EXPECT_EQ(SSL_CTX_use_certificate_chain_file(ctx_, TestCert(cert + ".pem").c_str()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx_, TestCert(cert + ".key").c_str(), SSL_FILETYPE_PEM),
              1);
    static const unsigned char kContext[] = "qpool-tls-h2-stub";
    SSL_CTX_set_session_id_context(ctx_, kContext, sizeof(kContext) - 1);
    SSL_CTX_set_alpn_select_cb(
        ctx_,
        [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
           unsigned int inlen, void*) -> int {
          for (unsigned int i = 0; i < inlen; i += in[i] + 1u) {
            if (in[i] == 2 && i + 3 <= inlen && std::memcmp(in + i + 1, "h2", 2) == 0) {
              *out = in + i + 1;
              *outlen = 2;
              return SSL_TLSEXT_ERR_OK;
            }
          }
          return SSL_TLSEXT_ERR_ALERT_FATAL;
        },
        nullptr);
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(listen(listen_fd_, 16), 0);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~TlsH2Stub() {
    stop_ = true;
    accept_thread_.join();
    close(listen_fd_);
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);  // ends the reads still waiting
    for (std::thread& thread : threads_) thread.join();
    for (int fd : fds_) close(fd);
    SSL_CTX_free(ctx_);
  }

  uint16_t port() const { return port_; }
  int handshakes() const { return handshakes_.load(); }
  int clean_closes() const { return clean_.load(); }
  int unclean_closes() const { return unclean_.load(); }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd ready{listen_fd_, POLLIN, 0};
      if (poll(&ready, 1, 100) <= 0) continue;
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      if (fds_.size() >= 64) {
        close(fd);
        continue;
      }
      fds_.push_back(fd);
      threads_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    timeval timeout{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      handshakes_++;
      static const uint8_t kSettings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};  // SETTINGS, none set
      size_t written = 0;
      SSL_write_ex(ssl, kSettings, sizeof(kSettings), &written);
      uint8_t scratch[4096];
      size_t n = 0;
      while (SSL_read_ex(ssl, scratch, sizeof(scratch), &n) == 1) {
      }
      if (SSL_get_error(ssl, 0) == SSL_ERROR_ZERO_RETURN) {
        clean_++;
        SSL_shutdown(ssl);
      } else {
        unclean_++;
      }
    }
    SSL_free(ssl);
    shutdown(fd, SHUT_WR);
  }

  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> handshakes_{0};
  std::atomic<int> clean_{0};
  std::atomic<int> unclean_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<int> fds_;  // guarded by mu_
  std::vector<std::thread> threads_;
};

class TlsE2eTest : public SecureUpstreamE2eTest {
 protected:
  void SetUp() override {
    if (TestCertsDir().empty()) GTEST_SKIP() << "the openssl command is not available";
    SecureUpstreamE2eTest::SetUp();
  }
  void StartTlsEmulator(const std::string& cert, std::vector<std::string> more = {}) {
    std::vector<std::string> flags = {"--tls-cert", TestCert(cert + ".pem"), "--tls-key",
                                      TestCert(cert + ".key")};
    flags.insert(flags.end(), more.begin(), more.end());
    ASSERT_NO_FATAL_FAILURE(StartEmulator(flags));
    ASSERT_NE(tls_port_, 0);
  }
};

TEST_F(TlsE2eTest, CleartextClientReachesATlsNodeThroughQpoold) {
  ASSERT_NO_FATAL_FAILURE(StartTlsEmulator("server"));
  ASSERT_NO_FATAL_FAILURE(StartQpoold(true, TlsYaml("    ca_file: " + TestCert("ca.pem") + "\n")));
  grpc::Status status = Exists();
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  ASSERT_TRUE(Create("tls_created").ok());
  EXPECT_GE(Metric("qpool_upstream_tls_handshakes_total"), 1);
  EXPECT_EQ(Metric("qpool_upstream_tls_unverified_connects_total"), 0);
}

// The node certificates qpoold must refuse (make_certs.sh), each with the `reason` label it counts
// and the words the app reads in the gRPC message or the REST answer.
struct BadCertificate {
  const char* cert;
  const char* reason;
  const char* words;
};
constexpr BadCertificate kBadCertificates[] = {
    {"expired", "expired", "certificate has expired"},
    {"unknown_ca", "unknown_ca", "unable to get local issuer certificate"},
    {"wrong_name", "name_mismatch", "IP address mismatch"}};

TEST_F(TlsE2eTest, EachBadCertificateFailsUnavailableWithItsReason) {
  for (const BadCertificate& c : kBadCertificates) {
    SCOPED_TRACE(c.cert);
    ASSERT_NO_FATAL_FAILURE(StartTlsEmulator(c.cert));
    ASSERT_NO_FATAL_FAILURE(
        StartQpoold(true, TlsYaml("    ca_file: " + TestCert("ca.pem") + "\n")));
    grpc::Status status = Exists("", absl::Seconds(3));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.words));
    EXPECT_GE(
        Metric("qpool_upstream_tls_failures_total", absl::StrCat(",reason=\"", c.reason, "\"")), 1);
    // The connect failure carries the same reason.
    EXPECT_GE(
        Metric("qpool_upstream_connect_failures_total", absl::StrCat(",reason=\"", c.reason, "\"")),
        1);
    EXPECT_THAT(ReadFileOrEmpty(log_path_), HasSubstr(c.words));
    std::cerr << c.cert << ": " << status.error_message() << "\n";
    stub_.reset();
    channel_.reset();
    StopQpoold();
    emulator_.reset();
  }
}

TEST_F(TlsE2eTest, VerifyFalseConnectsToAnUntrustedNodeAndIsCounted) {
  ASSERT_NO_FATAL_FAILURE(StartTlsEmulator("unknown_ca"));
  ASSERT_NO_FATAL_FAILURE(StartQpoold(true, TlsYaml("    verify: false\n")));
  grpc::Status status = Exists();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(Metric("qpool_upstream_tls_unverified_connects_total"), 1);
  EXPECT_THAT(ReadFileOrEmpty(log_path_), HasSubstr("is NOT checked"));
}

TEST_F(TlsE2eTest, MutualTlsPassesWithAClientCertificateAndFailsClearlyWithout) {
  ASSERT_NO_FATAL_FAILURE(StartTlsEmulator("server", {"--tls-client-ca", TestCert("ca.pem")}));
  ASSERT_NO_FATAL_FAILURE(StartQpoold(true, TlsYaml("    ca_file: " + TestCert("ca.pem") + "\n")));
  grpc::Status without = Exists("", absl::Seconds(3));
  EXPECT_EQ(without.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(without.error_message(), HasSubstr("client certificate"));
  EXPECT_GE(Metric("qpool_upstream_tls_failures_total", ",reason=\"client_cert\""), 1);
  std::cerr << "without a client certificate: " << without.error_message() << "\n";
  stub_.reset();
  channel_.reset();
  StopQpoold();

  ASSERT_NO_FATAL_FAILURE(StartQpoold(
      true, TlsYaml("    ca_file: " + TestCert("ca.pem") + "\n    cert_file: " +
                    TestCert("client.pem") + "\n    key_file: " + TestCert("client.key") + "\n")));
  grpc::Status with = Exists();
  EXPECT_TRUE(with.ok()) << with.error_message();
}

TEST_F(TlsE2eTest, CaFileSwappedLikeASecretIsUsedForNewConnections) {
  ASSERT_NO_FATAL_FAILURE(StartTlsEmulator("server"));
  // A Secret mount: ca.crt -> ..data/ca.crt, ..data -> ..v1 (the wrong CA at first).
  const std::string mount = dir_ + "/secret";
  std::filesystem::create_directories(mount + "/..v1");
  std::filesystem::copy_file(TestCert("other_ca.pem"), mount + "/..v1/ca.crt");
  std::filesystem::create_directory_symlink(mount + "/..v1", mount + "/..data");
  std::filesystem::create_symlink("..data/ca.crt", mount + "/ca.crt");
  ASSERT_NO_FATAL_FAILURE(StartQpoold(
      true, TlsYaml("    ca_file: " + mount + "/ca.crt\n") + "  secrets_poll_interval: 100ms\n"));
  EXPECT_EQ(Exists("", absl::Seconds(2)).error_code(), grpc::StatusCode::UNAVAILABLE);
  // The right CA arrives: a new directory and one rename of ..data, as the kubelet does it.
  std::filesystem::create_directories(mount + "/..v2");
  std::filesystem::copy_file(TestCert("ca.pem"), mount + "/..v2/ca.crt");
  std::filesystem::create_directory_symlink(mount + "/..v2", mount + "/..data_tmp");
  std::filesystem::rename(mount + "/..data_tmp", mount + "/..data");
  EXPECT_TRUE(WaitFor([&] { return Exists("", absl::Seconds(1)).ok(); }, absl::Seconds(15),
                      absl::Milliseconds(100)));
  EXPECT_THAT(ReadFileOrEmpty(log_path_), HasSubstr("TLS files changed"));
  // A broken file next: the previous CA stays in use, and the log says so.
  std::filesystem::create_directories(mount + "/..v3");
  std::ofstream(mount + "/..v3/ca.crt") << "garbage\n";
  std::filesystem::create_directory_symlink(mount + "/..v3", mount + "/..data_tmp");
  std::filesystem::rename(mount + "/..data_tmp", mount + "/..data");
  EXPECT_TRUE(WaitFor(
      [&] { return ReadFileOrEmpty(log_path_).find("keeping the previous") != std::string::npos; },
      absl::Seconds(10)));
  EXPECT_TRUE(Exists().ok());
}

TEST_F(TlsE2eTest, NodeCertificateRotatedUnderLoadFailsNoCallAndNewConnectionsSeeIt) {
  // The emulator re-reads its certificate files every second; qpoold recycles connections every
  // second (max_connection_age), so new connections keep coming.
  const std::string live = dir_ + "/node-tls";
  std::filesystem::create_directories(live);
  std::filesystem::copy_file(TestCert("server.pem"), live + "/tls.crt");
  std::filesystem::copy_file(TestCert("server.key"), live + "/tls.key");
  ASSERT_NO_FATAL_FAILURE(StartEmulator(
      {"--tls-cert", live + "/tls.crt", "--tls-key", live + "/tls.key", "--tls-reload-s", "1"}));
  ASSERT_NE(tls_port_, 0);
  ASSERT_NO_FATAL_FAILURE(StartQpoold(true,
                                      TlsYaml("    ca_file: " + TestCert("ca.pem") + "\n") +
                                          "  max_connection_age: 1s\n  min_connections: 2\n",
                                      "log:\n  level: debug\n"));
  ASSERT_TRUE(Exists().ok());
  // Serials as qpoold logs them: make_certs.sh signs server.pem as 1000 and server2.pem as 1001.
  ASSERT_THAT(ReadFileOrEmpty(log_path_), HasSubstr("serial 1000"));
  std::unique_ptr<ThreadedLoad> load = Load(8, 3000);
  ASSERT_TRUE(WaitFor([&] { return load->ok() >= 200; }, absl::Seconds(20)));
  const double handshakes_before = Metric("qpool_upstream_tls_handshakes_total");
  // The node's new chain: key first, then the certificate, each renamed into place.
  Replace(live + "/tls.key", ReadFileOrEmpty(TestCert("server2.key")));
  Replace(live + "/tls.crt", ReadFileOrEmpty(TestCert("server2.pem")));
  const bool seen =
      WaitFor([&] { return ReadFileOrEmpty(log_path_).find("serial 1001") != std::string::npos; },
              absl::Seconds(20), absl::Milliseconds(100));
  load->Stop();
  EXPECT_TRUE(seen) << "no new connection presented the new certificate";
  EXPECT_EQ(load->failed(), 0) << load->first_failure();
  EXPECT_GT(Metric("qpool_upstream_tls_handshakes_total"), handshakes_before);
  std::cerr << "certificate rotation under load: " << load->ok() << " calls, " << load->failed()
            << " failed; TLS handshakes " << Metric("qpool_upstream_tls_handshakes_total")
            << ", resumed " << Metric("qpool_upstream_tls_resumptions_total") << "\n";
}

TEST_F(TlsE2eTest, GentleGrpcClosesSendACloseNotifyAndSessionsStillResume) {
  TlsH2Stub node("server");
  tls_port_ = node.port();
  // Every connection is recycled (drained gently) after about a second; one is kept open.
  ASSERT_NO_FATAL_FAILURE(StartQpoold(true,
                                      TlsYaml("    ca_file: " + TestCert("ca.pem") + "\n") +
                                          "  min_connections: 1\n  max_connection_age: 1s\n",
                                      "health:\n  enabled: false\n"));
  ASSERT_TRUE(WaitFor([&] { return node.clean_closes() >= 3; }, absl::Seconds(20)))
      << node.clean_closes() << " clean closes, " << node.unclean_closes() << " unclean";
  EXPECT_EQ(node.unclean_closes(), 0);
  // The pool counted each close at once, as recycled, and keeps its one connection: the node has
  // that one open, and at most the one replacing a connection being closed.
  const double recycled = Metric("qpool_upstream_disconnects_total", ",reason=\"recycled\"");
  EXPECT_GE(recycled, node.clean_closes() - 1);
  EXPECT_LE(node.handshakes() - node.clean_closes() - node.unclean_closes(), 2);
  EXPECT_LE(Metric("qpool_upstream_connections", ",state=\"ready\""), 1);
  // Each reconnect resumed the session of the connection before it.
  const double handshakes = Metric("qpool_upstream_tls_handshakes_total");
  const double resumed = Metric("qpool_upstream_tls_resumptions_total");
  EXPECT_GE(handshakes, 3);
  EXPECT_GE(resumed, handshakes - 1);
  std::cerr << "gRPC gentle closes: node saw " << node.clean_closes() << " close_notify, "
            << node.unclean_closes() << " without; qpoold counted " << recycled
            << " recycled; TLS handshakes " << handshakes << ", resumed " << resumed << "\n";
  StopQpoold();
}

// --- REST over TLS, recycling, resumption
// ----------------------------------------------------------

// The emulator serving gRPC and REST over TLS (server.pem unless told), with the keys when given.
class RestTlsE2eTest : public TlsE2eTest {
 protected:
  void StartRestTlsEmulator(const std::string& cert, std::vector<std::string> more = {}) {
    std::vector<std::string> flags = {"--rest-listen", "127.0.0.1:0",
                                      "--tls-cert",    TestCert(cert + ".pem"),
                                      "--tls-key",     TestCert(cert + ".key")};
    flags.insert(flags.end(), more.begin(), more.end());
    ASSERT_NO_FATAL_FAILURE(StartEmulator(flags));
    ASSERT_NE(tls_port_, 0);
    ASSERT_NE(rest_tls_port_, 0);
  }
  std::string CaYaml() { return TlsYaml("    ca_file: " + TestCert("ca.pem") + "\n"); }
  static constexpr char kVectors[] = R"({"vectors":{"size":4,"distance":"Cosine"}})";

  // The upstream keys for RecycleUnderLoad: TLS with `ca`, two connections kept, files polled
  // every 100 ms; connections are recycled for nothing else (max_connection_age 30m).
  static std::string RecycleYaml(const std::string& ca) {
    return TlsYaml("    ca_file: " + ca + "\n") +
           "  min_connections: 2\n  secrets_poll_interval: 100ms\n  acquire_timeout: 5s\n";
  }
  struct RecycleLoad {
    bool recycled = false;  // the gRPC and the REST pool each recycled a connection
    int ok = 0;
    int failed = 0;
    std::string first_failure;
  };
  // Runs `change` while 8 gRPC and 8 REST clients call (at most 3,000 calls each), then waits up
  // to 20 s for both pools to recycle a connection, and for 200 more calls on the new ones.
  // Nothing was recycled before `change` (checked).
  RecycleLoad RecycleUnderLoad(const std::function<void()>& change) {
    RecycleLoad result;
    EXPECT_TRUE(Exists().ok());
    EXPECT_EQ(Rest("GET", "/collections").status, 200);
    std::unique_ptr<ThreadedLoad> load = Load(16, 3000, /*rest_too=*/true);
    EXPECT_TRUE(WaitFor([&] { return load->ok() >= 400; }, absl::Seconds(20)));
    auto recycled = [&] {
      return std::make_pair(Metric("qpool_upstream_disconnects_total", ",reason=\"recycled\""),
                            RestMetric("qpool_upstream_disconnects_total", ",reason=\"recycled\""));
    };
    EXPECT_EQ(recycled(), std::make_pair(0.0, 0.0)) << "recycled before the change";
    change();
    result.recycled = WaitFor(
        [&] {
          const auto now = recycled();
          return now.first > 0 && now.second > 0;
        },
        absl::Seconds(20), absl::Milliseconds(100));
    const int at_recycle = load->ok();
    WaitFor([&] { return load->ok() >= at_recycle + 200; }, absl::Seconds(10));
    load->Stop();
    result.ok = load->ok();
    result.failed = load->failed();
    result.first_failure = load->first_failure();
    const auto counts = recycled();
    std::cerr << "recycled: gRPC " << counts.first << ", REST " << counts.second << "\n";
    return result;
  }
};

TEST_F(RestTlsE2eTest, RestReadsGoWithTheReadOnlyKeyAndWritesWithTheFullKeyOverTls) {
  ASSERT_NO_FATAL_FAILURE(StartRestTlsEmulator(
      "server", {"--api-key", "rest-full-1", "--read-only-api-key", "rest-ro-1"}));
  const std::string full = dir_ + "/api-key";
  const std::string ro = dir_ + "/ro-api-key";
  Replace(full, "rest-full-1\n");
  Replace(ro, "rest-ro-1\n");
  ASSERT_NO_FATAL_FAILURE(StartQpooldRest(
      true, CaYaml() + "  api_key_file: " + full + "\n  read_only_api_key_file: " + ro + "\n",
      "health:\n  enabled: false\n"));
  ResetCounters();
  for (int i = 0; i < 5; ++i) {
    HttpReply reply = Rest("GET", "/collections");
    ASSERT_EQ(reply.status, 200) << reply.body;
  }
  HttpReply created = Rest("PUT", "/collections/rest_tls_written", kVectors);
  EXPECT_EQ(created.status, 200) << created.body;
  EXPECT_EQ(KeyCount("read_only"), 5);
  EXPECT_EQ(KeyCount("full"), 1);
  EXPECT_EQ(KeyCount("refused"), 0);
  EXPECT_EQ(Rest("GET", "/collections/rest_tls_written/exists").status, 200);
  EXPECT_GE(RestMetric("qpool_upstream_tls_handshakes_total"), 1);
  EXPECT_GE(RestMetric("qpool_upstream_connects_total"), 1);
}

TEST_F(RestTlsE2eTest, EmulatorRestAnswers401WithoutAKeyAnd403ForTheReadOnlyKeyOnAWrite) {
  // What qpoold's keys stand in for: the emulator's REST port with Qdrant's semantics. qpoold
  // (no key of its own) passes the node's refusals through.
  ASSERT_NO_FATAL_FAILURE(StartRestTlsEmulator(
      "server", {"--api-key", "rest-full-2", "--read-only-api-key", "rest-ro-2"}));
  const std::string ro = dir_ + "/ro-api-key";
  Replace(ro, "rest-ro-2\n");
  ASSERT_NO_FATAL_FAILURE(StartQpooldRest(true, CaYaml(), "health:\n  enabled: false\n"));
  HttpReply no_key = Rest("GET", "/collections");
  EXPECT_EQ(no_key.status, 401) << no_key.body;
  EXPECT_THAT(no_key.body, HasSubstr("Must provide an API key"));
  StopQpoold();
  // Only a read-only key held by qpoold: reads pass, a write is refused by the node with 403.
  ASSERT_NO_FATAL_FAILURE(StartQpooldRest(true, CaYaml() + "  api_key_file: " + ro + "\n",
                                          "health:\n  enabled: false\n"));
  EXPECT_EQ(Rest("GET", "/collections").status, 200);
  HttpReply write = Rest("PUT", "/collections/refused_write", kVectors);
  EXPECT_EQ(write.status, 403) << write.body;
  EXPECT_THAT(write.body, HasSubstr("read-only"));
}

TEST_F(RestTlsE2eTest, EachBadCertificateAnswers503WithItsReason) {
  for (const BadCertificate& c : kBadCertificates) {
    SCOPED_TRACE(c.cert);
    ASSERT_NO_FATAL_FAILURE(StartRestTlsEmulator(c.cert));
    ASSERT_NO_FATAL_FAILURE(
        StartQpooldRest(true, CaYaml() + "  acquire_timeout: 2s\n", "health:\n  enabled: false\n"));
    HttpReply reply = Rest("GET", "/collections");
    EXPECT_EQ(reply.status, 503) << reply.body;
    EXPECT_THAT(reply.body, HasSubstr(c.words));
    const std::string reason = absl::StrCat(",reason=\"", c.reason, "\"");
    EXPECT_GE(RestMetric("qpool_upstream_connect_failures_total", reason), 1);
    EXPECT_GE(RestMetric("qpool_upstream_tls_failures_total", reason), 1);
    std::cerr << c.cert << ": " << reply.status << " " << reply.body << "\n";
    StopQpoold();
    emulator_.reset();
  }
}

TEST_F(RestTlsE2eTest, ServerThatNegotiatesNoAlpnStillServesRest) {
  ASSERT_NO_FATAL_FAILURE(StartRestTlsEmulator("server", {"--rest-tls-alpn", "false"}));
  ASSERT_NO_FATAL_FAILURE(StartQpooldRest(true, CaYaml(), "health:\n  enabled: false\n"));
  HttpReply reply = Rest("GET", "/collections");
  EXPECT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(RestMetric("qpool_upstream_tls_failures_total", ",reason=\"alpn\""), 0);
}

TEST_F(RestTlsE2eTest, ReconnectsResumeTheTlsSessionForRestAndGrpc) {
  ASSERT_NO_FATAL_FAILURE(StartRestTlsEmulator("server"));
  // Every connection carries one call and is then recycled: each call reconnects.
  ASSERT_NO_FATAL_FAILURE(
      StartQpooldRest(true, CaYaml() + "  min_connections: 0\n  max_requests_per_connection: 1\n",
                      "health:\n  enabled: false\n"));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(Rest("GET", "/collections").status, 200);
    grpc::Status status = Exists();
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  const double rest_handshakes = RestMetric("qpool_upstream_tls_handshakes_total");
  const double rest_resumed = RestMetric("qpool_upstream_tls_resumptions_total");
  const double grpc_handshakes = Metric("qpool_upstream_tls_handshakes_total");
  const double grpc_resumed = Metric("qpool_upstream_tls_resumptions_total");
  std::cerr << "REST: " << rest_handshakes << " handshakes, " << rest_resumed
            << " resumed; gRPC: " << grpc_handshakes << " handshakes, " << grpc_resumed
            << " resumed\n";
  EXPECT_GE(rest_handshakes, 5);
  EXPECT_GE(grpc_handshakes, 5);
  // Every reconnect after the first full handshake offers the session it got; the node takes it.
  EXPECT_GE(rest_resumed, rest_handshakes - 1);
  EXPECT_GE(grpc_resumed, grpc_handshakes - 1);
}

TEST_F(RestTlsE2eTest, NewCaFileRecyclesOpenConnectionsUnderLoadWithoutFailingACall) {
  ASSERT_NO_FATAL_FAILURE(StartRestTlsEmulator("server"));
  const std::string ca = dir_ + "/ca.pem";
  Replace(ca, ReadFileOrEmpty(TestCert("ca.pem")));
  ASSERT_NO_FATAL_FAILURE(StartQpooldRest(true, RecycleYaml(ca), "health:\n  enabled: false\n"));
  // New material that still verifies the node: the CA bundle gains a second CA.
  const RecycleLoad load = RecycleUnderLoad([&] {
    Replace(ca, ReadFileOrEmpty(TestCert("ca.pem")) + ReadFileOrEmpty(TestCert("other_ca.pem")));
  });
  EXPECT_TRUE(load.recycled) << "the open connections were not recycled after the CA file changed";
  EXPECT_EQ(load.failed, 0) << load.first_failure;
  EXPECT_THAT(ReadFileOrEmpty(log_path_), HasSubstr("open ones are recycled"));
  std::cerr << "CA change under load: " << load.ok << " calls, " << load.failed << " failed\n";
}

TEST_F(RestTlsE2eTest,
       ReloadNamingAnotherCaFileRecyclesOpenConnectionsUnderLoadWithoutFailingACall) {
  ASSERT_NO_FATAL_FAILURE(StartRestTlsEmulator("server"));
  const std::string ca = dir_ + "/ca.pem";
  Replace(ca, ReadFileOrEmpty(TestCert("ca.pem")));
  ASSERT_NO_FATAL_FAILURE(StartQpooldRest(true, RecycleYaml(ca), "health:\n  enabled: false\n"));
  // The same CA at another path: upstream.tls changed, the files did not.
  const std::string moved = dir_ + "/moved-ca.pem";
  Replace(moved, ReadFileOrEmpty(ca));
  const RecycleLoad load = RecycleUnderLoad([&] {
    std::string yaml = ReadFileOrEmpty(config_path_);
    const std::string line = "ca_file: " + ca + "\n";
    const size_t at = yaml.find(line);
    if (at != std::string::npos) yaml.replace(at, line.size(), "ca_file: " + moved + "\n");
    Replace(config_path_, yaml);
    EXPECT_TRUE(qpoold_->Signal(SIGHUP).ok());
  });
  EXPECT_TRUE(load.recycled)
      << "the open connections were not recycled after a reload changed upstream.tls.ca_file";
  EXPECT_EQ(load.failed, 0) << load.first_failure;
  EXPECT_THAT(ReadFileOrEmpty(log_path_), HasSubstr("TLS settings changed by the reload"));
  EXPECT_THAT(ReadFileOrEmpty(log_path_), HasSubstr("config reloaded"));
  std::cerr << "upstream.tls reload under load: " << load.ok << " calls, " << load.failed
            << " failed\n";
}

TEST_F(RestTlsE2eTest, NodeMovedToANewCaUnderLoadFailsNoCallAndNewConnectionsSeeTheNewChain) {
  // A planned CA change: qpoold's CA bundle gains the new CA first, then the node's certificate
  // is replaced by one the new CA signed. The node's files are re-read every second by the
  // emulator (REST as Qdrant's tls.cert_ttl does it, gRPC too); qpoold recycles its connections
  // every second (max_connection_age), so new ones keep coming while 8 REST and 4 gRPC clients
  // call.
  const std::string live = dir_ + "/node-tls";
  std::filesystem::create_directories(live);
  std::filesystem::copy_file(TestCert("server.pem"), live + "/tls.crt");
  std::filesystem::copy_file(TestCert("server.key"), live + "/tls.key");
  const std::string bundle = dir_ + "/ca-bundle.pem";
  Replace(bundle, ReadFileOrEmpty(TestCert("ca.pem")));
  ASSERT_NO_FATAL_FAILURE(
      StartEmulator({"--rest-listen", "127.0.0.1:0", "--tls-cert", live + "/tls.crt", "--tls-key",
                     live + "/tls.key", "--tls-reload-s", "1"}));
  ASSERT_NE(rest_tls_port_, 0);
  ASSERT_NO_FATAL_FAILURE(StartQpooldRest(
      true,
      TlsYaml("    ca_file: " + bundle + "\n") +
          "  min_connections: 2\n  max_connection_age: 1s\n  secrets_poll_interval: 100ms\n"
          "  acquire_timeout: 5s\n",
      "health:\n  enabled: false\nlog:\n  level: debug\n"));
  ASSERT_TRUE(Exists().ok());
  ASSERT_EQ(Rest("GET", "/collections").status, 200);
  EXPECT_GE(EmulatorCount("rest_tls_certs_presented", "server"), 1);
  std::atomic<bool> stop{false};
  std::atomic<int> rest_ok{0};
  std::atomic<int> grpc_ok{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 3000 && !stop.load(); ++i) {  // bounded
        HttpReply reply = Rest("GET", "/collections");
        if (reply.status == 200) {
          rest_ok.fetch_add(1);
        } else {
          failed.fetch_add(1);
          std::cerr << "REST call failed: " << reply.status << " " << reply.body << "\n";
        }
      }
    });
  }
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 3000 && !stop.load(); ++i) {
        grpc::Status status = Exists();
        if (status.ok()) {
          grpc_ok.fetch_add(1);
        } else {
          failed.fetch_add(1);
          std::cerr << "gRPC call failed: " << status.error_message() << "\n";
        }
      }
    });
  }
  auto count_in_log = [&](const std::string& text) {
    const std::string log = ReadFileOrEmpty(log_path_);
    int n = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
    return n;
  };
  ASSERT_TRUE(
      WaitFor([&] { return rest_ok.load() >= 200 && grpc_ok.load() >= 100; }, absl::Seconds(20)));
  // 1. The bundle gains the new CA; both stores (gRPC and REST) take it.
  Replace(bundle, ReadFileOrEmpty(TestCert("ca.pem")) + ReadFileOrEmpty(TestCert("other_ca.pem")));
  const bool bundle_taken =
      WaitFor([&] { return count_in_log("TLS files changed; new connections") >= 2; },
              absl::Seconds(10), absl::Milliseconds(100));
  // 2. The node moves to the new CA: key first, then the certificate, each renamed into place.
  Replace(live + "/tls.key", ReadFileOrEmpty(TestCert("next.key")));
  Replace(live + "/tls.crt", ReadFileOrEmpty(TestCert("next.pem")));
  const bool rest_saw = WaitFor(
      [&] {
        return count_in_log("upstream REST " + rest_node_ + ": TLS up (subject /CN=next") > 0;
      },
      absl::Seconds(20), absl::Milliseconds(100));
  const bool grpc_saw =
      WaitFor([&] { return count_in_log("upstream " + node_ + ": TLS up (subject /CN=next") > 0; },
              absl::Seconds(20), absl::Milliseconds(100));
  // Some more calls on the new connections.
  const int at_rotation = rest_ok.load() + grpc_ok.load();
  WaitFor([&] { return rest_ok.load() + grpc_ok.load() >= at_rotation + 300; }, absl::Seconds(10));
  stop = true;
  for (std::thread& t : clients) t.join();
  EXPECT_TRUE(bundle_taken) << "qpoold did not take the new CA bundle";
  EXPECT_TRUE(rest_saw) << "no new REST connection was shown the new chain";
  EXPECT_TRUE(grpc_saw) << "no new gRPC connection was shown the new chain";
  EXPECT_EQ(failed.load(), 0);
  // The node's view: its REST port presented the new certificate in full handshakes.
  EXPECT_GE(EmulatorCount("rest_tls_certs_presented", "next"), 1);
  EXPECT_EQ(RestMetric("qpool_upstream_tls_failures_total", ",reason=\"unknown_ca\""), 0);
  EXPECT_EQ(Metric("qpool_upstream_tls_failures_total", ",reason=\"unknown_ca\""), 0);
  std::cerr << "node moved to a new CA under load: REST " << rest_ok.load() << " calls, gRPC "
            << grpc_ok.load() << ", " << failed.load() << " failed; REST handshakes "
            << RestMetric("qpool_upstream_tls_handshakes_total") << " (resumed "
            << RestMetric("qpool_upstream_tls_resumptions_total") << "), emulator presented "
            << "server " << EmulatorCount("rest_tls_certs_presented", "server") << " / next "
            << EmulatorCount("rest_tls_certs_presented", "next") << " times\n";
}

TEST_F(RestTlsE2eTest, GentleRestClosesSendACloseNotifyAndSessionsStillResume) {
  ASSERT_NO_FATAL_FAILURE(StartRestTlsEmulator("server"));
  // Every REST connection carries one request and is then drained (recycled) by qpoold.
  ASSERT_NO_FATAL_FAILURE(StartQpooldRest(true, CaYaml() + "  max_requests_per_connection: 1\n",
                                          "health:\n  enabled: false\n"));
  constexpr int kRequests = 6;
  for (int i = 0; i < kRequests; ++i) ASSERT_EQ(Rest("GET", "/collections").status, 200);
  // The node's view: each connection ended with the client's close_notify before its FIN.
  EXPECT_TRUE(
      WaitFor([&] { return EmulatorCount("rest_tls_client_closes", "close_notify") >= kRequests; },
              absl::Seconds(10)));
  EXPECT_EQ(EmulatorCount("rest_tls_client_closes", "close_notify"), kRequests);
  EXPECT_EQ(EmulatorCount("rest_tls_client_closes", "without_close_notify"), 0);
  // Counts stay right: qpoold counted each close as recycled, and the node has no REST
  // connection left open (none is kept: rest.min_connections is 0).
  EXPECT_EQ(RestMetric("qpool_upstream_disconnects_total", ",reason=\"recycled\""), kRequests);
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string body = HttpGet(control_port_, "/counters").body;
        const size_t at = body.find("\"rest_connections_open\":");
        return at != std::string::npos &&
               std::atoi(body.c_str() + at + std::strlen("\"rest_connections_open\":")) == 0;
      },
      absl::Seconds(5)));
  // Sessions stay resumable: every reconnect after the first resumed.
  const double handshakes = RestMetric("qpool_upstream_tls_handshakes_total");
  const double resumed = RestMetric("qpool_upstream_tls_resumptions_total");
  EXPECT_EQ(handshakes, kRequests);
  EXPECT_GE(resumed, handshakes - 1);
  EXPECT_EQ(EmulatorCount("rest_tls_certs_presented", "server"), handshakes - resumed);
  std::cerr << "REST gentle closes: node saw "
            << EmulatorCount("rest_tls_client_closes", "close_notify") << " close_notify; TLS "
            << "handshakes " << handshakes << ", resumed " << resumed << "\n";
}

TEST_F(RestTlsE2eTest, RetriedCallKeepsTheApiKeyItStartedWith) {
  // The node knows only the old key. The first attempt of each call carries it and fails
  // UNAVAILABLE after a while; the key file changes meanwhile; the retry must carry the old key
  // still (the new one would be refused), for gRPC and for REST alike.
  ASSERT_NO_FATAL_FAILURE(StartRestTlsEmulator("server", {"--api-key", "old-key-7"}));
  const std::string full = dir_ + "/api-key";
  Replace(full, "old-key-7\n");
  ASSERT_NO_FATAL_FAILURE(StartQpooldRest(
      true, CaYaml() + "  api_key_file: " + full + "\n  secrets_poll_interval: 100ms\n",
      "health:\n  enabled: false\n"));
  ASSERT_TRUE(Exists().ok());
  ASSERT_EQ(Rest("GET", "/collections/secure_e2e/exists").status, 200);
  ASSERT_EQ(HttpRequest(control_port_, "PUT", "/faults",
                        R"({"methods":{"qdrant.Collections/CollectionExists":)"
                        R"({"error_rate":1,"error_code":"UNAVAILABLE","latency_ms":1500}}})")
                .status,
            200);
  ResetCounters();
  grpc::Status grpc_status;
  HttpReply rest_reply;
  std::thread grpc_call([&] { grpc_status = Exists("", absl::Seconds(15)); });
  std::thread rest_call([&] { rest_reply = Rest("GET", "/collections/secure_e2e/exists"); });
  // Both first attempts are at the node (counted under the full key) before the key changes.
  ASSERT_TRUE(WaitFor([&] { return KeyCount("full") >= 2; }, absl::Seconds(5)));
  Replace(full, "new-key-7\n");
  ASSERT_TRUE(WaitFor(
      [&] {
        return ReadFileOrEmpty(log_path_).find("goes on calls from now on") != std::string::npos;
      },
      absl::Seconds(5)));
  ASSERT_EQ(HttpRequest(control_port_, "PUT", "/faults", "{}").status, 200);
  grpc_call.join();
  rest_call.join();
  EXPECT_TRUE(grpc_status.ok()) << grpc_status.error_code() << " " << grpc_status.error_message();
  EXPECT_EQ(rest_reply.status, 200) << rest_reply.body;
  EXPECT_EQ(KeyCount("refused"), 0);
  EXPECT_GE(KeyCount("full"), 4);  // two attempts each, all with the old key
}

// --- API keys ------------------------------------------------------------------------------------

class KeysE2eTest : public SecureUpstreamE2eTest {};

TEST_F(KeysE2eTest, ReadOnlyKeyGoesOnReadsAndTheFullKeyOnWrites) {
  ASSERT_NO_FATAL_FAILURE(
      StartEmulator({"--api-key", "full-key-1", "--read-only-api-key", "ro-key-1"}));
  const std::string full = dir_ + "/api-key";
  const std::string ro = dir_ + "/ro-api-key";
  Replace(full, "full-key-1\n");
  Replace(ro, "ro-key-1\n");
  ASSERT_NO_FATAL_FAILURE(
      StartQpoold(false, "  api_key_file: " + full + "\n  read_only_api_key_file: " + ro + "\n",
                  "health:\n  enabled: false\n"));
  ResetCounters();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Exists().ok());
  ASSERT_TRUE(Create("written_with_full_key").ok());
  EXPECT_EQ(KeyCount("read_only"), 5);
  EXPECT_EQ(KeyCount("full"), 1);
  EXPECT_EQ(KeyCount("refused"), 0);
  // if_absent: an app's own key passes through (a wrong one is refused by the node, not by
  // qpoold).
  EXPECT_EQ(Exists("app-wrong-key").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(KeyCount("refused"), 1);
}

TEST_F(KeysE2eTest, OverrideReplacesTheAppsKey) {
  ASSERT_NO_FATAL_FAILURE(StartEmulator({"--api-key", "full-key-2"}));
  const std::string full = dir_ + "/api-key";
  Replace(full, "full-key-2");
  ASSERT_NO_FATAL_FAILURE(StartQpoold(false,
                                      "  api_key_file: " + full + "\n  api_key_mode: override\n",
                                      "health:\n  enabled: false\n"));
  grpc::Status status = Exists("app-wrong-key");
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(KeysE2eTest, KeyFileRotatedUnderLoadFailsNoCall) {
  // The node accepts the old key (as its read-only key: these are reads) and the new one, as a
  // Qdrant in the middle of a rotation would; the counters tell which one each call carried.
  ASSERT_NO_FATAL_FAILURE(
      StartEmulator({"--api-key", "new-key-3", "--read-only-api-key", "old-key-3"}));
  const std::string full = dir_ + "/api-key";
  Replace(full, "old-key-3\n");
  ASSERT_NO_FATAL_FAILURE(
      StartQpoold(false, "  api_key_file: " + full + "\n  secrets_poll_interval: 100ms\n",
                  "health:\n  enabled: false\n"));
  std::unique_ptr<ThreadedLoad> load = Load(8, 2000);  // at most 2,000 calls per client
  ASSERT_TRUE(WaitFor([&] { return load->ok() >= 200; }, absl::Seconds(20)));
  EXPECT_GT(KeyCount("read_only"), 0);
  Replace(full, "new-key-3\n");
  const bool switched =
      WaitFor([&] { return KeyCount("full") >= 100; }, absl::Seconds(15), absl::Milliseconds(50));
  load->Stop();
  EXPECT_TRUE(switched);
  EXPECT_EQ(load->failed(), 0) << load->first_failure();
  EXPECT_EQ(KeyCount("refused"), 0);
  // From now on only the new key.
  ResetCounters();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Exists().ok());
  EXPECT_EQ(KeyCount("full"), 20);
  EXPECT_EQ(KeyCount("read_only"), 0);
  std::cerr << "rotation under load: " << load->ok() << " calls, " << load->failed() << " failed\n";
}

TEST_F(KeysE2eTest, NoKeyLeaksIntoLogsMetricsPoolErrorsOrCheckConfig) {
  const std::string key =
      absl::StrCat("canary-full-", getpid(), "-", absl::ToUnixNanos(absl::Now()));
  const std::string ro_key = key + "-readonly";
  ASSERT_NO_FATAL_FAILURE(StartEmulator({"--api-key", key, "--read-only-api-key", ro_key}));
  const std::string full = dir_ + "/api-key";
  const std::string ro = dir_ + "/ro-api-key";
  Replace(full, key + "\n");
  Replace(ro, ro_key + "\n");
  ASSERT_NO_FATAL_FAILURE(
      StartQpoold(false,
                  "  api_key_file: " + full + "\n  read_only_api_key_file: " + ro +
                      "\n  secrets_poll_interval: 100ms\n",
                  "log:\n  level: trace\nhealth:\n  deep_interval: 300ms\n  deep_timeout: 200ms\n"
                  "  medium_interval: 300ms\n  medium_timeout: 200ms\n"));
  std::vector<std::string> seen;
  ASSERT_TRUE(Exists().ok());
  ASSERT_TRUE(Create("leak_test").ok());
  // Errors: the app's wrong key (if_absent), then an unusable file and a wrong key from qpoold.
  seen.push_back(Exists("app-wrong-key").error_message());
  Replace(full, "\n");
  ASSERT_TRUE(WaitFor(
      [&] {
        return ReadFileOrEmpty(log_path_).find("keeping the previous key") != std::string::npos;
      },
      absl::Seconds(10)));
  Replace(ro, "wrong-" + ro_key + "\n");
  ASSERT_TRUE(WaitFor([&] { return !Exists().ok(); }, absl::Seconds(10), absl::Milliseconds(50)));
  seen.push_back(Exists().error_message());
  seen.push_back(Create("refused_write").error_message());
  // Let a deep probe fail with the wrong key too.
  ASSERT_TRUE(WaitFor(
      [&] {
        return ReadFileOrEmpty(log_path_).find("refused qpoold's API key") != std::string::npos;
      },
      absl::Seconds(10)));
  seen.push_back(HttpGet(admin_port_, "/metrics").body);
  seen.push_back(HttpGet(admin_port_, "/pool").body);
  seen.push_back(HttpGet(admin_port_, "/readyz").body);
  // --check-config and --print-config (the configuration dump).
  for (const char* flag : {"--check-config", "--print-config"}) {
    const std::string out = dir_ + "/check.out";
    auto check = Subprocess::Spawn({QPOOLD_PATH, flag, "--config", config_path_}, out);
    ASSERT_TRUE(check.ok());
    std::string stdout_text;
    while (true) {
      absl::StatusOr<std::string> line = (*check)->ReadStdoutLine(absl::Seconds(10));
      if (!line.ok()) break;
      stdout_text += *line + "\n";
    }
    (*check)->WaitForExit(absl::Seconds(10));
    seen.push_back(stdout_text + ReadFileOrEmpty(out));
  }
  StopQpoold();
  seen.push_back(ReadFileOrEmpty(log_path_));
  // log.level trace: everything qpoold logs (it has no trace lines; debug is the most verbose).
  EXPECT_THAT(seen.back(), HasSubstr(" debug ")) << "the log was not verbose";
  for (const std::string& text : seen) {
    EXPECT_THAT(text, Not(HasSubstr(key)));
    EXPECT_THAT(text, Not(HasSubstr(ro_key)));
  }
  std::cerr << "checked " << seen.size() << " outputs for the keys\n";
}

}  // namespace
}  // namespace qpool::testing
