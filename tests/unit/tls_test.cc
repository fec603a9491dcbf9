// The TLS client (daemon/tls): a client engine against an OpenSSL server in the same process,
// bytes moved between them by hand (or over a loopback TCP pair for the gentle close), with
// certificates made at run time by tests/e2e/tls/make_certs.sh (the `openssl` command). Without it
// every test is SKIPPED, and ctest shows the whole file as not run.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "daemon/server/transport_tls.h"
#include "daemon/tls/client_tls.h"
#include "daemon/tls/context_store.h"
#include "daemon/tls/graceful_close.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_certs.h"

namespace qpool::tls {
namespace {

using ::testing::HasSubstr;

const auto* const kCerts = ::qpool::testing::RegisterTestCerts("qpool_tls_unit");
using ::qpool::testing::TestCert;
using ::qpool::testing::TestCertsDir;

// A TLS server on memory BIOs, offering `alpn` ("" selects nothing).
class TestServer {
 public:
  TestServer(const std::string& name, std::string alpn, const std::string& client_ca = "")
      : alpn_(std::move(alpn)) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    EXPECT_EQ(SSL_CTX_use_certificate_chain_file(ctx_, TestCert(name + ".pem").c_str()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx_, TestCert(name + ".key").c_str(), SSL_FILETYPE_PEM),
              1);
    SSL_CTX_set_alpn_select_cb(ctx_, &SelectAlpn, this);
    const unsigned char context_id[] = "qpool-tls-test";
    SSL_CTX_set_session_id_context(ctx_, context_id, sizeof(context_id) - 1);
    if (!client_ca.empty()) {
      SSL_CTX_load_verify_locations(ctx_, TestCert(client_ca).c_str(), nullptr);
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
  }
  ~TestServer() { SSL_CTX_free(ctx_); }

  // A server connection on a connected, blocking socket descriptor (not owned).
  SSL* NewSocketConnection(int fd) {
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    SSL_set_accept_state(ssl);
    return ssl;
  }

  // A fresh server connection (one per client connection).
  SSL* NewConnection() {
    SSL* ssl = SSL_new(ctx_);
    SSL_set_bio(ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    BIO_set_mem_eof_return(SSL_get_rbio(ssl), -1);
    SSL_set_accept_state(ssl);
    return ssl;
  }

 private:
  static int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen,
                        const unsigned char* in, unsigned int inlen, void* arg) {
    auto* self = static_cast<TestServer*>(arg);
    if (self->alpn_.empty()) return SSL_TLSEXT_ERR_NOACK;
    for (unsigned int i = 0; i < inlen; i += in[i] + 1) {
      if (std::string(reinterpret_cast<const char*>(in + i + 1), in[i]) == self->alpn_) {
        *out = in + i + 1;
        *outlen = in[i];
        return SSL_TLSEXT_ERR_OK;
      }
    }
    return SSL_TLSEXT_ERR_NOACK;
  }

  SSL_CTX* ctx_;
  std::string alpn_;
};

// Moves bytes both ways until the client's handshake finishes or fails; then lets the server
// speak once more (TLS 1.3 tickets, a refusal of the client's certificate) and the client read it.
absl::Status Connect(TlsEngine& client, SSL* server) {
  for (int round = 0; round < 20; ++round) {
    absl::StatusOr<bool> done = client.Handshake();
    if (!done.ok()) return done.status();
    std::vector<uint8_t> to_server;
    client.TakeOutput(to_server);
    BIO_write(SSL_get_rbio(server), to_server.data(), static_cast<int>(to_server.size()));
    SSL_do_handshake(server);
    uint8_t scratch[256];
    size_t n = 0;
    if (SSL_is_init_finished(server)) SSL_read_ex(server, scratch, sizeof(scratch), &n);
    BIO* out = SSL_get_wbio(server);
    std::vector<uint8_t> to_client(BIO_ctrl_pending(out));
    if (!to_client.empty()) {
      BIO_read(out, to_client.data(), static_cast<int>(to_client.size()));
      client.FeedInput(to_client.data(), to_client.size());
    }
    if (*done && to_client.empty()) {
      absl::StatusOr<size_t> read = client.Read(scratch, sizeof(scratch));
      ERR_clear_error();
      return read.ok() ? absl::OkStatus() : read.status();
    }
  }
  return absl::DeadlineExceededError("handshake did not finish in 20 rounds");
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (TestCertsDir().empty()) GTEST_SKIP() << "the openssl command is not available";
  }
  static config::TlsOptions Options(const std::string& ca = "ca.pem") {
    config::TlsOptions options;
    options.enabled = true;
    options.ca_file = TestCert(ca);
    return options;
  }
  // Handshake of a client for `host` with `options` against a server with certificate `name`.
  static absl::Status HandshakeAgainst(const std::string& name, const config::TlsOptions& options,
                                       const std::string& host = "127.0.0.1",
                                       const std::string& server_alpn = "h2") {
    auto context = ClientContext::Create(options, host, "h2");
    if (!context.ok()) return context.status();
    auto engine = (*context)->NewEngine();
    if (!engine.ok()) return engine.status();
    TestServer server(name, server_alpn);
    SSL* ssl = server.NewConnection();
    absl::Status status = Connect(**engine, ssl);
    SSL_free(ssl);
    return status;
  }
  // Three connections in turn from one client context to one server: the first is a full
  // handshake, each later one resumes the session the one before it got. Each goes away with a
  // close_notify (Shutdown) when `close_notify`, without one otherwise.
  static void ExpectReconnectsResume(bool close_notify) {
    auto context = ClientContext::Create(Options(), "127.0.0.1", "h2");
    ASSERT_TRUE(context.ok()) << context.status();
    TestServer server("server", "h2");
    for (int i = 0; i < 3; ++i) {
      SCOPED_TRACE(i);
      auto engine = (*context)->NewEngine();
      ASSERT_TRUE(engine.ok());
      SSL* ssl = server.NewConnection();
      absl::Status status = Connect(**engine, ssl);
      ASSERT_TRUE(status.ok()) << status;
      EXPECT_EQ((*engine)->resumed(), i > 0);
      if (close_notify) {
        ASSERT_TRUE((*engine)->Shutdown().ok());
        engine->reset();
      }
      SSL_free(ssl);
    }
  }
  static std::optional<FailureReason> ReasonOf(const absl::Status& status) {
    return FailureReasonOf(status);
  }
};

TEST_F(TlsTest, ValidCertificateHandshakesAndAgreesOnH2) {
  EXPECT_TRUE(HandshakeAgainst("server", Options()).ok());
  EXPECT_TRUE(HandshakeAgainst("server", Options(), "localhost").ok());
}

TEST_F(TlsTest, ExpiredCertificateFailsAsExpired) {
  absl::Status status = HandshakeAgainst("expired", Options());
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_EQ(ReasonOf(status), FailureReason::kExpired);
  EXPECT_THAT(std::string(status.message()), HasSubstr("certificate has expired"));
}

TEST_F(TlsTest, CertificateOfAnotherCaFailsAsUnknownCa) {
  absl::Status status = HandshakeAgainst("unknown_ca", Options());
  EXPECT_EQ(ReasonOf(status), FailureReason::kUnknownCa) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("upstream.tls.ca_file"));
}

TEST_F(TlsTest, CertificateForAnotherNameFailsAsNameMismatch) {
  absl::Status by_ip = HandshakeAgainst("wrong_name", Options(), "127.0.0.1");
  EXPECT_EQ(ReasonOf(by_ip), FailureReason::kNameMismatch) << by_ip;
  absl::Status by_name = HandshakeAgainst("wrong_name", Options(), "localhost");
  EXPECT_EQ(ReasonOf(by_name), FailureReason::kNameMismatch) << by_name;
  EXPECT_THAT(std::string(by_name.message()), HasSubstr("upstream.tls.server_name"));
  // The name the certificate does carry, set as server_name, passes.
  config::TlsOptions options = Options();
  options.server_name = "wrong.invalid";
  EXPECT_TRUE(HandshakeAgainst("wrong_name", options).ok());
}

TEST_F(TlsTest, SystemStoreDoesNotTrustTheTestCa) {
  config::TlsOptions options = Options();
  options.ca_file.clear();
  EXPECT_EQ(ReasonOf(HandshakeAgainst("server", options)), FailureReason::kUnknownCa);
}

TEST_F(TlsTest, VerifyFalseAcceptsAnyCertificate) {
  config::TlsOptions options = Options();
  options.verify = false;
  EXPECT_TRUE(HandshakeAgainst("unknown_ca", options).ok());
  EXPECT_TRUE(HandshakeAgainst("expired", options).ok());
}

TEST_F(TlsTest, ServerWithoutH2FailsAsAlpn) {
  absl::Status status = HandshakeAgainst("server", Options(), "127.0.0.1", /*server_alpn=*/"");
  EXPECT_EQ(ReasonOf(status), FailureReason::kAlpn) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("did not agree to h2"));
}

TEST_F(TlsTest, ClientCertificateRequiredFailsAsClientCertWithoutOne) {
  TestServer server("server", "h2", /*client_ca=*/"ca.pem");
  auto context = ClientContext::Create(Options(), "127.0.0.1", "h2");
  ASSERT_TRUE(context.ok()) << context.status();
  auto engine = (*context)->NewEngine();
  ASSERT_TRUE(engine.ok());
  SSL* ssl = server.NewConnection();
  absl::Status status = Connect(**engine, ssl);
  SSL_free(ssl);
  EXPECT_EQ(ReasonOf(status), FailureReason::kClientCert) << status;

  config::TlsOptions with_cert = Options();
  with_cert.cert_file = TestCert("client.pem");
  with_cert.key_file = TestCert("client.key");
  auto mtls = ClientContext::Create(with_cert, "127.0.0.1", "h2");
  ASSERT_TRUE(mtls.ok()) << mtls.status();
  auto mtls_engine = (*mtls)->NewEngine();
  ASSERT_TRUE(mtls_engine.ok());
  ssl = server.NewConnection();
  status = Connect(**mtls_engine, ssl);
  SSL_free(ssl);
  EXPECT_TRUE(status.ok()) << status;
}

TEST_F(TlsTest, ReconnectResumesTheSessionOfAConnectionClosedWithoutCloseNotify) {
  // As the pool closes a connection: no close_notify.
  ExpectReconnectsResume(/*close_notify=*/false);
}

TEST_F(TlsTest, ShutdownQueuesACloseNotifyTheServerReadsAsACleanEnd) {
  auto context = ClientContext::Create(Options(), "127.0.0.1", "h2");
  ASSERT_TRUE(context.ok()) << context.status();
  TestServer server("server", "h2");
  auto engine = (*context)->NewEngine();
  ASSERT_TRUE(engine.ok());
  SSL* ssl = server.NewConnection();
  ASSERT_TRUE(Connect(**engine, ssl).ok());
  ASSERT_TRUE((*engine)->Shutdown().ok());
  std::vector<uint8_t> alert;
  (*engine)->TakeOutput(alert);
  ASSERT_FALSE(alert.empty());
  BIO_write(SSL_get_rbio(ssl), alert.data(), static_cast<int>(alert.size()));
  uint8_t scratch[64];
  size_t n = 0;
  EXPECT_EQ(SSL_read_ex(ssl, scratch, sizeof(scratch), &n), 0);
  EXPECT_EQ(SSL_get_error(ssl, 0), SSL_ERROR_ZERO_RETURN);
  EXPECT_TRUE(SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl);
}

TEST_F(TlsTest, ShutdownBeforeTheHandshakeIsRefused) {
  auto context = ClientContext::Create(Options(), "127.0.0.1", "h2");
  ASSERT_TRUE(context.ok()) << context.status();
  auto engine = (*context)->NewEngine();
  ASSERT_TRUE(engine.ok());
  EXPECT_EQ((*engine)->Shutdown().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TlsTest, ReconnectResumesTheSessionOfAConnectionClosedWithCloseNotify) {
  ExpectReconnectsResume(/*close_notify=*/true);
}

// A client connection over loopback TCP: the client engine's handshake done on `client` (Asio)
// against `server` on the accepted descriptor, which `serve` then runs on a thread of its own.
class GracefulCloseTest : public TlsTest {
 protected:
  void Open(std::function<void(SSL*)> serve) {
    using boost::asio::ip::tcp;
    signal(SIGPIPE, SIG_IGN);  // the server's OpenSSL writes with write(): a gone peer is EPIPE
    tcp::acceptor acceptor(io_, tcp::endpoint(boost::asio::ip::address_v4::loopback(), 0));
    client_.connect(acceptor.local_endpoint());
    server_socket_ = std::make_unique<tcp::socket>(acceptor.accept());
    SSL* ssl = server_.NewSocketConnection(server_socket_->native_handle());
    server_thread_ = std::thread([ssl, serve = std::move(serve)] {
      if (SSL_accept(ssl) == 1) serve(ssl);
      SSL_free(ssl);
    });
    auto context = ClientContext::Create(Options(), "127.0.0.1", "h2");
    ASSERT_TRUE(context.ok()) << context.status();
    auto engine = (*context)->NewEngine();
    ASSERT_TRUE(engine.ok());
    engine_ = *std::move(engine);
    for (int round = 0; round < 20; ++round) {  // blocking socket: a bounded number of flights
      absl::StatusOr<bool> done = engine_->Handshake();
      ASSERT_TRUE(done.ok()) << done.status();
      std::vector<uint8_t> out;
      engine_->TakeOutput(out);
      if (!out.empty()) boost::asio::write(client_, boost::asio::buffer(out));
      if (*done) return;
      uint8_t in[4096];
      const size_t n = client_.read_some(boost::asio::buffer(in));
      engine_->FeedInput(in, n);
    }
    FAIL() << "no handshake in 20 flights";
  }
  void TearDown() override {
    if (server_socket_ != nullptr) {
      boost::system::error_code ignored;
      server_socket_->shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
    }
    if (server_thread_.joinable()) server_thread_.join();
  }

  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket client_{io_};
  std::unique_ptr<boost::asio::ip::tcp::socket> server_socket_;
  TestServer server_{"server", "h2"};
  std::unique_ptr<TlsEngine> engine_;
  std::thread server_thread_;
};

TEST_F(GracefulCloseTest, SendsACloseNotifyAndClosesWhenThePeerDoes) {
  std::promise<int> server_saw;
  std::future<int> seen = server_saw.get_future();
  ASSERT_NO_FATAL_FAILURE(Open([&server_saw](SSL* ssl) {
    uint8_t scratch[256];
    size_t n = 0;
    while (SSL_read_ex(ssl, scratch, sizeof(scratch), &n) == 1) {
    }
    const int error = SSL_get_error(ssl, 0);
    SSL_shutdown(ssl);  // its own close_notify, then (TearDown) the FIN
    server_saw.set_value(error);
  }));
  const auto start = std::chrono::steady_clock::now();
  CloseGracefully(std::move(client_), std::move(engine_), {}, std::chrono::seconds(10));
  ASSERT_EQ(seen.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(seen.get(), SSL_ERROR_ZERO_RETURN);
  // The server answered and closes: the closing side ends on that, long before its timeout.
  TearDown();
  io_.run();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(GracefulCloseTest, PeerThatNeverClosesCostsAtMostTheTimeout) {
  // The server reads the close_notify but neither answers nor closes (until TearDown).
  ASSERT_NO_FATAL_FAILURE(Open([](SSL* ssl) {
    uint8_t scratch[256];
    size_t n = 0;
    while (SSL_read_ex(ssl, scratch, sizeof(scratch), &n) == 1) {
    }
  }));
  const auto start = std::chrono::steady_clock::now();
  CloseGracefully(std::move(client_), std::move(engine_), {}, std::chrono::milliseconds(200));
  io_.run();  // returns once the close is over
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(190));
  EXPECT_LT(took, std::chrono::seconds(3));
}

TEST_F(TlsTest, RestAcceptsAServerThatTakesNoPartInAlpnButGrpcDoesNot) {
  for (const char* alpn : {"http/1.1", "h2"}) {
    SCOPED_TRACE(alpn);
    auto context = ClientContext::Create(Options(), "127.0.0.1", alpn);
    ASSERT_TRUE(context.ok()) << context.status();
    auto engine = (*context)->NewEngine();
    ASSERT_TRUE(engine.ok());
    TestServer server("server", /*alpn=*/"");
    SSL* ssl = server.NewConnection();
    absl::Status status = Connect(**engine, ssl);
    SSL_free(ssl);
    if (std::string(alpn) == "h2") {
      EXPECT_EQ(FailureReasonOf(status), FailureReason::kAlpn) << status;
    } else {
      EXPECT_TRUE(status.ok()) << status;
      EXPECT_EQ((*engine)->alpn_selected(), "");
    }
  }
}

// H2Transport's TLS half (server::TransportTls) on the same memory-BIO server: the handshake
// advanced by what the socket would read, the gathered frames sealed into records the server
// decrypts, and the server's answer decrypted for nghttp2.
TEST_F(TlsTest, TransportTlsHandshakesSealsFramesAndDecryptsTheAnswer) {
  auto context = ClientContext::Create(Options(), "127.0.0.1", "h2");
  ASSERT_TRUE(context.ok()) << context.status();
  auto engine = (*context)->NewEngine();
  ASSERT_TRUE(engine.ok());
  TestServer server("server", "h2");
  SSL* ssl = server.NewConnection();
  // What the server's socket would receive: the records, sent in full.
  auto to_server = [&](server::TransportTls& tls) {
    server::WireBuffer& records = tls.records();
    BIO_write(SSL_get_rbio(ssl), records.unsent(), static_cast<int>(records.pending()));
    records.Clear();
  };
  auto from_server = [&] {
    BIO* out = SSL_get_wbio(ssl);
    std::vector<uint8_t> bytes(BIO_ctrl_pending(out));
    if (!bytes.empty()) BIO_read(out, bytes.data(), static_cast<int>(bytes.size()));
    return bytes;
  };
  server::TransportTls tls;
  server::WireBuffer frames;
  ASSERT_TRUE(tls.Start(*std::move(engine)).ok());
  EXPECT_TRUE(tls.active());
  bool done = false;
  for (int round = 0; round < 20 && !done; ++round) {
    ASSERT_TRUE(tls.Seal(frames).ok());  // the handshake's own messages
    to_server(tls);
    SSL_do_handshake(ssl);
    const std::vector<uint8_t> answer = from_server();
    if (answer.empty()) continue;
    absl::StatusOr<bool> completed = tls.TakeInput(answer.data(), answer.size());
    ASSERT_TRUE(completed.ok()) << completed.status();
    done = *completed;
  }
  ASSERT_TRUE(done) << "the handshake did not complete";
  EXPECT_FALSE(tls.handshaking());

  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  frames.Append(reinterpret_cast<const uint8_t*>(preface.data()), preface.size());
  ASSERT_TRUE(tls.Seal(frames).ok());
  EXPECT_EQ(frames.pending(), 0u) << "the frames became records";
  to_server(tls);
  char got[64];
  size_t n = 0;
  ASSERT_EQ(SSL_read_ex(ssl, got, sizeof(got), &n), 1);
  EXPECT_EQ(std::string(got, n), preface);

  ASSERT_EQ(SSL_write(ssl, "settings", 8), 8);
  const std::vector<uint8_t> answer = from_server();
  absl::StatusOr<bool> completed = tls.TakeInput(answer.data(), answer.size());
  ASSERT_TRUE(completed.ok()) << completed.status();
  EXPECT_FALSE(*completed) << "the handshake completes once";
  std::string plain;
  absl::StatusOr<bool> decrypted = tls.Decrypt([&](const uint8_t* data, size_t len) {
    plain.append(reinterpret_cast<const char*>(data), len);
    return true;
  });
  ASSERT_TRUE(decrypted.ok()) << decrypted.status();
  EXPECT_TRUE(*decrypted);
  EXPECT_EQ(plain, "settings");
  SSL_free(ssl);
}

TEST(ConnectFailureTest, SlotsNameTlsReasonsThenConnectTimeoutAndOther) {
  EXPECT_STREQ(ConnectFailureSlotName(ConnectFailureSlot(
                   WithFailureReason(absl::UnavailableError("x"), FailureReason::kExpired))),
               "expired");
  EXPECT_STREQ(ConnectFailureSlotName(ConnectFailureSlot(
                   WithConnectFailure(absl::UnavailableError("x"), ConnectFailure::kTimeout))),
               "timeout");
  EXPECT_STREQ(ConnectFailureSlotName(ConnectFailureSlot(
                   WithConnectFailure(absl::UnavailableError("x"), ConnectFailure::kConnect))),
               "connect");
  EXPECT_STREQ(ConnectFailureSlotName(ConnectFailureSlot(absl::UnavailableError("x"))), "other");
  EXPECT_EQ(kConnectFailureSlots, kFailureReasonCount + 3);
}

TEST_F(TlsTest, BadFilesAreRefusedAtCreateNamingTheFile) {
  config::TlsOptions options = Options("missing.pem");
  auto missing = ClientContext::Create(options, "127.0.0.1", "h2");
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("missing.pem"));
  options = Options();
  options.cert_file = TestCert("client.pem");
  options.key_file = TestCert("server.key");  // not the certificate's key
  auto mismatch = ClientContext::Create(options, "127.0.0.1", "h2");
  EXPECT_THAT(std::string(mismatch.status().message()), HasSubstr("does not match"));
}

TEST_F(TlsTest, UnloadableCertificateOrKeyFilesAreNamedWithoutTheirContent) {
  config::TlsOptions options = Options();
  options.cert_file = TestCert("no-such-client.pem");
  options.key_file = TestCert("client.key");
  auto no_cert = ClientContext::Create(options, "127.0.0.1", "h2");
  EXPECT_EQ(no_cert.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(no_cert.status().message()),
      HasSubstr("upstream.tls.cert_file " + TestCert("no-such-client.pem") + ": cannot load"));
  // A key file that is no PEM key at all: named, and nothing of it quoted.
  const std::string garbage = TestCert("garbage.key");
  std::ofstream(garbage) << "not-a-key-SECRET-BYTES\n";
  options.cert_file = TestCert("client.pem");
  options.key_file = garbage;
  auto bad_key = ClientContext::Create(options, "127.0.0.1", "h2");
  EXPECT_EQ(bad_key.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(bad_key.status().message());
  EXPECT_THAT(message, HasSubstr("upstream.tls.key_file " + garbage +
                                 ": cannot load the private key (PEM, unencrypted)"));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("SECRET")));
}

// A Kubernetes Secret mount: ca.crt -> ..data/ca.crt, ..data -> a timestamped directory that is
// swapped in one rename.
class SecretMount {
 public:
  explicit SecretMount(const std::string& root) : root_(root) {
    std::filesystem::create_directories(root_);
  }
  void Publish(const std::string& file_name, const std::string& content) {
    const std::string version = root_ + "/..v" + std::to_string(++version_);
    std::filesystem::create_directories(version);
    std::ofstream(version + "/" + file_name) << content;
    const std::string tmp = root_ + "/..data_tmp";
    std::filesystem::remove(tmp);
    std::filesystem::create_directory_symlink(version, tmp);
    std::filesystem::rename(tmp, root_ + "/..data");
    const std::string link = root_ + "/" + file_name;
    if (!std::filesystem::is_symlink(link)) {
      std::filesystem::create_symlink("..data/" + file_name, link);
    }
  }

 private:
  std::string root_;
  int version_ = 0;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST_F(TlsTest, StoreReloadsACaSwappedLikeASecretAndKeepsTheOldOnABadFile) {
  SecretMount mount(TestCertsDir() + "/mount");
  mount.Publish("ca.crt", ReadAll(TestCert("other_ca.pem")));
  config::UpstreamConfig upstream;
  upstream.nodes.push_back({"127.0.0.1", 6334});
  upstream.tls.defaults.enabled = true;
  upstream.tls.defaults.ca_file = TestCertsDir() + "/mount/ca.crt";
  auto store = ContextStore::Create(upstream, "h2");
  ASSERT_TRUE(store.ok()) << store.status();
  auto handshake = [&] {
    auto engine = (*store)->Get(0)->NewEngine();
    TestServer server("server", "h2");
    SSL* ssl = server.NewConnection();
    absl::Status status = Connect(**engine, ssl);
    SSL_free(ssl);
    return status;
  };
  EXPECT_EQ(ReasonOf(handshake()), FailureReason::kUnknownCa);
  EXPECT_EQ((*store)->Reload(), 0);  // nothing changed

  mount.Publish("ca.crt", ReadAll(TestCert("ca.pem")));
  EXPECT_EQ((*store)->Reload(), 1);
  EXPECT_TRUE(handshake().ok());

  std::shared_ptr<const ClientContext> before = (*store)->Get(0);
  mount.Publish("ca.crt", "not a certificate\n");
  EXPECT_EQ((*store)->Reload(), 0);
  EXPECT_EQ((*store)->Get(0), before);  // the previous context stays
  EXPECT_TRUE(handshake().ok());
}

TEST_F(TlsTest, StoreGivesCleartextNodesNoContextAndAppliesPerNodeOverrides) {
  config::UpstreamConfig upstream;
  upstream.nodes.push_back({"127.0.0.1", 6334});
  upstream.nodes.push_back({"127.0.0.1", 6335});
  upstream.tls.defaults = Options();
  upstream.tls.defaults.enabled = false;
  config::TlsOverride second;
  second.enabled = true;
  second.server_name = "localhost";
  upstream.tls.nodes["127.0.0.1:6335"] = second;
  auto store = ContextStore::Create(upstream, "h2");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Get(0), nullptr);
  ASSERT_NE((*store)->Get(1), nullptr);
  EXPECT_EQ((*store)->Get(1)->server_name(), "localhost");
}

// A reload's new store against the old one: only the nodes reached differently are recycled.
TEST_F(TlsTest, ReloadRecyclesOnlyTheNodesWhoseTlsSettingsChanged) {
  config::UpstreamConfig upstream;
  for (uint16_t port : {6334, 6335, 6336, 6337}) upstream.nodes.push_back({"127.0.0.1", port});
  upstream.tls.defaults = Options();
  config::TlsOverride cleartext;
  cleartext.enabled = false;
  upstream.tls.nodes["127.0.0.1:6337"] = cleartext;
  auto before = ContextStore::Create(upstream, "h2");
  ASSERT_TRUE(before.ok()) << before.status();
  // Node 0 as it was; node 1 another server name; node 2 TLS off; node 3 TLS on.
  config::UpstreamConfig next = upstream;
  config::TlsOverride named;
  named.server_name = "localhost";
  next.tls.nodes["127.0.0.1:6335"] = named;
  next.tls.nodes["127.0.0.1:6336"] = cleartext;
  next.tls.nodes.erase("127.0.0.1:6337");
  auto after = ContextStore::Create(next, "h2");
  ASSERT_TRUE(after.ok()) << after.status();
  config::NodeTable was;
  for (size_t i = 0; i < 4; ++i) {
    config::NodeSlot slot;
    slot.active = true;
    slot.generation = i + 1;
    slot.grpc = upstream.nodes[i];
    slot.name = slot.grpc.ToString();
    slot.tls_index = i;
    was.slots.push_back(slot);
  }
  config::NodeTable now = was;
  EXPECT_THAT(SlotsWithNewTlsSettings(was, now, before->get(), after->get(), false),
              ::testing::ElementsAre(1, 2, 3));
  EXPECT_TRUE((*after)->SameSettings(0, **before, 0));
  // The same store, or none: nothing changed. A slot given to another node (new generation) or
  // no longer active is not recycled; a node moved in upstream.nodes is compared by its entry.
  EXPECT_TRUE(SlotsWithNewTlsSettings(was, now, before->get(), before->get(), false).empty());
  EXPECT_TRUE(SlotsWithNewTlsSettings(was, now, nullptr, after->get(), false).empty());
  now.slots[1].generation = 99;
  now.slots[2].active = false;
  now.slots[3].tls_index = 0;  // now upstream.nodes[0]'s settings, as node 3 had none of TLS
  EXPECT_THAT(SlotsWithNewTlsSettings(was, now, before->get(), after->get(), false),
              ::testing::ElementsAre(3));
  now.slots[3].tls_index = 3;
  now.slots[3].active = false;
  EXPECT_TRUE(SlotsWithNewTlsSettings(was, now, before->get(), after->get(), false).empty());
}

}  // namespace
}  // namespace qpool::tls
