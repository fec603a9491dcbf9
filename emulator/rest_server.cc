#include "emulator/rest_server.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <iterator>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "emulator/net.h"
#include "emulator/rest_api.h"

namespace qpool::emulator {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr size_t kMaxHeaderBytes = 64 << 10;
constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";

// Inflates a gzip or zlib ("deflate") body; kInvalidArgument when it is corrupt, kOutOfRange when
// it inflates beyond `limit` bytes.
absl::StatusOr<std::string> Inflate(const std::string& compressed, size_t limit) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK) return absl::InternalError("zlib inflateInit2 failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  zs.avail_in = static_cast<uInt>(compressed.size());
  std::string out;
  char chunk[16384];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(chunk);
    zs.avail_out = sizeof(chunk);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      std::string why = zs.msg != nullptr ? zs.msg : "truncated stream";
      inflateEnd(&zs);
      return absl::InvalidArgumentError(absl::StrCat("cannot inflate the request body: ", why));
    }
    out.append(chunk, sizeof(chunk) - zs.avail_out);
    if (out.size() > limit) {
      inflateEnd(&zs);
      return absl::OutOfRangeError("inflated request body too large");
    }
    if (rc == Z_OK && zs.avail_in == 0 && zs.avail_out != 0) {
      inflateEnd(&zs);
      return absl::InvalidArgumentError("cannot inflate the request body: truncated stream");
    }
  }
  inflateEnd(&zs);
  return out;
}

// Whether an Accept-Encoding value allows gzip: "gzip" or "*" listed without q=0.
bool AcceptsGzip(absl::string_view accept_encoding) {
  for (absl::string_view item : absl::StrSplit(accept_encoding, ',')) {
    std::vector<absl::string_view> parts = absl::StrSplit(item, ';');
    absl::string_view coding = absl::StripAsciiWhitespace(parts[0]);
    if (!absl::EqualsIgnoreCase(coding, "gzip") && coding != "*") continue;
    bool refused = false;
    for (size_t i = 1; i < parts.size(); ++i) {
      absl::string_view param = absl::StripAsciiWhitespace(parts[i]);
      if (absl::ConsumePrefix(&param, "q=")) {
        double q = 1;
        refused = absl::SimpleAtod(param, &q) && q <= 0;
      }
    }
    if (!refused) return true;
  }
  return false;
}

// gzip of `text` (zlib's default level).
std::string Gzip(const std::string& text) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return "";
  }
  std::string out(deflateBound(&zs, text.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = static_cast<uInt>(text.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return rc == Z_STREAM_END ? out : "";
}

}  // namespace

// One client connection, as the server sees it (RestSessionOn<Stream>: cleartext or TLS).
class RestSession : public std::enable_shared_from_this<RestSession> {
 public:
  virtual ~RestSession() = default;
  virtual const std::string& method() const = 0;
  virtual bool closed() const = 0;
  // Runs the parked or delayed call. Call on the I/O thread.
  virtual void Proceed() = 0;
  // Answers a parked call 503 (the server is stopping).
  virtual void RefuseStopping() = 0;
  // Goaway: closes now when idle, else after the answer being prepared.
  virtual void CloseGracefully() = 0;
  // Resets the connection (RST, no answer).
  virtual void Abort() = 0;
};

// The TLS port's context (RestServerOptions::tls_cert_file): certificate chain and key, an
// optional client CA (mTLS), ALPN http/1.1 when asked for.
absl::StatusOr<std::shared_ptr<asio::ssl::context>> MakeServerTls(
    const RestServerOptions& options) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  boost::system::error_code ec;
  context->use_certificate_chain_file(options.tls_cert_file, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls-cert: ", ec.message()));
  context->use_private_key_file(options.tls_key_file, asio::ssl::context::pem, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls-key: ", ec.message()));
  SSL_CTX* ctx = context->native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // Session resumption: the server's cache (TLS 1.2) and tickets (TLS 1.3), OpenSSL's defaults.
  static const unsigned char kSessionContext[] = "qdrant-emulator-rest";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1);
  if (!options.tls_client_ca_file.empty()) {
    context->load_verify_file(options.tls_client_ca_file, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls-client-ca: ", ec.message()));
    context->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  if (options.tls_alpn) {
    SSL_CTX_set_alpn_select_cb(
        ctx,
        [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
           unsigned int inlen, void*) -> int {
          // Offered protocols are length-prefixed; pick http/1.1, else do not agree.
          for (unsigned int i = 0; i < inlen;) {
            const unsigned int len = in[i];
            if (i + 1 + len > inlen) break;
            if (len == 8 && std::memcmp(in + i + 1, "http/1.1", 8) == 0) {
              *out = in + i + 1;
              *outlen = static_cast<unsigned char>(len);
              return SSL_TLSEXT_ERR_OK;
            }
            i += 1 + len;
          }
          return SSL_TLSEXT_ERR_ALERT_FATAL;
        },
        nullptr);
  }
  return context;
}

// The contents of the TLS files (certificate chain, key, client CA), to tell when they changed;
// nullopt while one cannot be read (a Secret mount halfway through its swap).
std::optional<std::vector<std::string>> ReadTlsFiles(const RestServerOptions& options) {
  std::vector<std::string> contents;
  for (const std::string* path :
       {&options.tls_cert_file, &options.tls_key_file, &options.tls_client_ca_file}) {
    if (path->empty()) {
      contents.emplace_back();
      continue;
    }
    std::ifstream file(*path, std::ios::binary);
    if (!file) return std::nullopt;
    contents.emplace_back(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    if (file.bad()) return std::nullopt;
  }
  return contents;
}

// The common name of the certificate `ssl` presents, "?" when it has none.
std::string PresentedName(SSL* ssl) {
  X509* cert = SSL_get_certificate(ssl);  // not owned
  char name[256];
  if (cert == nullptr || X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName,
                                                   name, sizeof(name)) < 0) {
    return "?";
  }
  return name;
}

class RestServer::Impl {
 public:
  Impl(const RestServerOptions& options, Storage& storage, const HandlerOptions& handler_options,
       FaultInjector& faults, int listen_fd, int tls_fd,
       std::shared_ptr<asio::ssl::context> tls_context)
      : options_(options),
        handlers_(storage, handler_options),
        api_(handlers_),
        faults_(faults),
        address_(LocalAddress(listen_fd)),
        tls_address_(tls_fd >= 0 ? LocalAddress(tls_fd) : std::string()),
        tls_context_(std::move(tls_context)),
        acceptor_(ioc_),
        tls_acceptor_(ioc_),
        reload_timer_(ioc_) {
    if (tls_context_ != nullptr) tls_files_ = ReadTlsFiles(options_).value_or(tls_files_);
    boost::system::error_code ec;
    acceptor_.assign(tcp::v4(), listen_fd, ec);
    assign_error_ = ec;
    if (tls_fd >= 0 && !assign_error_) {
      tls_acceptor_.assign(tcp::v4(), tls_fd, ec);
      assign_error_ = ec;
    }
  }

  absl::Status Start() {
    if (assign_error_) {
      return absl::InternalError(absl::StrCat("REST listener: ", assign_error_.message()));
    }
    Accept();
    if (tls_context_ != nullptr) {
      AcceptTls();
      if (options_.tls_reload_seconds > 0) ScheduleTlsReload();
    }
    thread_ = std::thread([this] {
      ioc_.run();
      loop_done_ = true;  // Read after join(): sessions destroyed with ioc_ see it.
    });
    return absl::OkStatus();
  }

  void CloseConnections(CloseMode mode) {
    RunOnIoThread([this, mode] {
      if (mode == CloseMode::kAbrupt) {
        CloseAbruptly();
      } else if (mode == CloseMode::kGoaway) {
        CloseGracefully();
      }
    });
  }
  void ReleaseParkedCalls() {
    RunOnIoThread([this] { ReleaseParked(/*stopping=*/false); });
  }
  void Shutdown();
  const std::string& address() const { return address_; }
  const std::string& tls_address() const { return tls_address_; }

  // I/O-thread side, used by sessions.
  const RestServerOptions& options() const { return options_; }
  const RestApi& api() const { return api_; }
  FaultInjector& faults() { return faults_; }
  bool stopping() const { return stopping_; }
  void Register(RestSession* session) { sessions_.insert(session); }
  void Unregister(RestSession* session) {
    sessions_.erase(session);
    if (stopping_ && sessions_.empty() && !loop_done_) ioc_.stop();
  }
  void Park(std::shared_ptr<RestSession> session) { parked_.push_back(std::move(session)); }
  void CloseAbruptly();
  void CloseGracefully();

 private:
  void Accept();
  void AcceptTls();
  // Every options_.tls_reload_seconds: a new TLS context when the files changed and load.
  void ScheduleTlsReload();
  void ReloadTls();
  void ReleaseParked(bool stopping);
  // Runs `fn` on the I/O thread and waits for it; does nothing once the loop has stopped (the
  // server is shutting down).
  template <typename Fn>
  void RunOnIoThread(Fn fn) {
    if (!thread_.joinable()) return;
    if (std::this_thread::get_id() == thread_.get_id()) {
      fn();
      return;
    }
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    asio::post(ioc_, [fn = std::move(fn), done] {
      fn();
      done->set_value();
    });
    while (finished.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout) {
      if (ioc_.stopped()) return;
    }
  }

  const RestServerOptions options_;
  const Handlers handlers_;
  const RestApi api_;
  FaultInjector& faults_;
  const std::string address_;
  const std::string tls_address_;  // empty without TLS
  // Null without TLS. I/O thread only after Start(): replaced by ReloadTls(); a session keeps the
  // one it was accepted with.
  std::shared_ptr<asio::ssl::context> tls_context_;
  std::vector<std::string> tls_files_;  // I/O thread: contents last tried (loaded or refused)
  boost::system::error_code assign_error_;
  // I/O thread only. Declared before ioc_: destroying ioc_ destroys pending handlers, whose
  // sessions unregister themselves here.
  std::unordered_set<RestSession*> sessions_;
  std::vector<std::shared_ptr<RestSession>> parked_;
  bool stopping_ = false;
  bool loop_done_ = false;  // Written by the I/O thread as it leaves run().
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  tcp::acceptor tls_acceptor_;  // open only with TLS
  asio::steady_timer reload_timer_;
  std::thread thread_;
  std::once_flag shutdown_once_;
};

// One client connection: reads requests one at a time, answers each in order. `Stream` is
// beast::tcp_stream, or beast::ssl_stream over one for the TLS port (the handshake comes first).
template <typename Stream>
class RestSessionOn : public RestSession {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  // `tls`: the TLS port's context at accept time (kTls only), kept for the session's life.
  RestSessionOn(RestServer::Impl& server, tcp::socket socket,
                std::shared_ptr<asio::ssl::context> tls = nullptr)
      : server_(server),
        tls_context_(std::move(tls)),
        stream_(MakeStream(std::move(socket), tls_context_.get())),
        timer_(stream_.get_executor()) {
    server_.faults().CountRestConnectionOpened();
    server_.Register(this);
  }
  ~RestSessionOn() override {
    server_.Unregister(this);
    server_.faults().CountRestConnectionClosed();
  }

  void Start() {
    if constexpr (kTls) {
      Lowest().expires_after(std::chrono::seconds(10));
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = Self()](beast::error_code ec) {
                                if (ec) return self->Close();
                                SSL* ssl = self->stream_.native_handle();
                                const bool resumed = SSL_session_reused(ssl) == 1;
                                self->server_.faults().CountRestTlsHandshake(
                                    resumed ? std::string() : PresentedName(ssl), resumed);
                                self->handshake_done_ = true;
                                self->ReadHeader();
                              });
    } else {
      ReadHeader();
    }
  }

  const std::string& method() const override { return call_->method; }
  bool closed() const override { return closed_; }

  // Runs the parked or delayed call. Call on the I/O thread.
  void Proceed() override {
    if (closed_) return;
    const CallPlan& plan = plan_;
    RestReply reply;
    if (plan.error.has_value() && !plan.error->after_handler) {
      Reply(InjectedReply());
      return;
    }
    reply = call_->run();
    if (reply.status == 200 && !call_->write_collection.empty()) {
      server_.faults().CountWrite(call_->write_collection);
    }
    if (plan.close_after == CloseMode::kAbrupt) {
      server_.CloseAbruptly();  // Processed; the connection drops instead of the answer.
      return;
    }
    if (plan.error.has_value()) reply = InjectedReply();
    if (plan.close_after == CloseMode::kGoaway) {
      close_after_answer_ = true;
      server_.CloseGracefully();
    }
    Reply(std::move(reply));
  }

  // Answers a parked call 503 (the server is stopping).
  void RefuseStopping() override {
    close_after_answer_ = true;
    Reply(RestApi::Error(503, "qdrant-emulator is stopping"));
  }

  // Goaway: closes now when idle, else after the answer being prepared.
  void CloseGracefully() override {
    if (idle_) {
      Close();
    } else {
      close_after_answer_ = true;
    }
  }

  // Resets the connection (RST, no answer).
  void Abort() override {
    if (closed_) return;
    linger reset{1, 0};
    setsockopt(Lowest().socket().native_handle(), SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    Close();
  }

 private:
  std::shared_ptr<RestSessionOn> Self() {
    return std::static_pointer_cast<RestSessionOn>(shared_from_this());
  }
  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }

  static Stream MakeStream(tcp::socket socket, [[maybe_unused]] asio::ssl::context* tls) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *tls);
    } else {
      return Stream(std::move(socket));
    }
  }

  void ReadHeader() {
    if (server_.stopping()) return Close();
    idle_ = true;
    parser_.emplace();
    parser_->header_limit(kMaxHeaderBytes);
    parser_->body_limit(server_.options().max_body_bytes);
    if (server_.options().idle_timeout > absl::ZeroDuration()) {
      Lowest().expires_after(absl::ToChronoMilliseconds(server_.options().idle_timeout));
    } else {
      Lowest().expires_never();
    }
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = Self()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    idle_ = false;
    Lowest().expires_never();
    const auto& request = parser_->get();
    auto expect = request.find(http::field::expect);
    if (expect != request.end() && beast::iequals(expect->value(), "100-continue") &&
        !parser_->is_done()) {
      asio::async_write(stream_, asio::buffer(kContinue, sizeof(kContinue) - 1),
                        [self = Self()](beast::error_code ec, size_t) {
                          if (ec) return self->Close();
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_, [self = Self()](beast::error_code ec, size_t) {
      if (ec) return self->OnReadError(ec);
      self->Handle();
    });
  }

  void OnReadError(beast::error_code ec) {
    if constexpr (kTls) {
      // The client ended the connection (not our idle timeout, not our own close): with a TLS
      // close_notify first (OpenSSL saw it: SSL_RECEIVED_SHUTDOWN), or without one (a FIN or a
      // reset alone: Asio's stream_truncated, or a reset).
      if (handshake_done_ && !closed_ && ec != beast::error::timeout &&
          ec != asio::error::operation_aborted) {
        const bool clean = (SSL_get_shutdown(stream_.native_handle()) & SSL_RECEIVED_SHUTDOWN) != 0;
        if (clean || ec == asio::ssl::error::stream_truncated || ec == http::error::end_of_stream ||
            ec == asio::error::eof || ec == asio::error::connection_reset) {
          server_.faults().CountRestTlsClientClose(clean);
        }
      }
    }
    if (ec == asio::ssl::error::stream_truncated) return Close();
    if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
        ec == beast::error::timeout || ec == asio::error::connection_reset || closed_) {
      return Close();
    }
    idle_ = false;
    keep_alive_ = false;
    version_ = 11;
    if (ec == http::error::header_limit) {
      return Reply(RestApi::Error(431, "Request header fields too large"));
    }
    if (ec == http::error::body_limit) {
      return Reply(RestApi::Error(
          413, absl::StrCat("Payload too large: the body exceeds ",
                            server_.options().max_body_bytes, " bytes (max_request_size_mb)")));
    }
    if (ec == http::error::partial_message || ec == asio::error::eof) return Close();
    Reply(RestApi::Error(400, absl::StrCat("Bad request: ", ec.message())));
  }

  void Handle() {
    server_.faults().CountRestRequest();
    http::request<http::string_body> request = parser_->release();
    parser_.reset();
    keep_alive_ = request.keep_alive();
    version_ = request.version();
    auto accept_encoding = request.find(http::field::accept_encoding);
    gzip_answer_ = server_.options().gzip_answers && accept_encoding != request.end() &&
                   AcceptsGzip(absl::string_view(accept_encoding->value().data(),
                                                 accept_encoding->value().size()));
    std::string body = std::move(request.body());
    if (auto encoding = request.find(http::field::content_encoding); encoding != request.end()) {
      std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(
          absl::string_view(encoding->value().data(), encoding->value().size())));
      if (name == "gzip" || name == "x-gzip" || name == "deflate") {
        absl::StatusOr<std::string> inflated = Inflate(body, server_.options().max_body_bytes);
        if (!inflated.ok()) {
          if (inflated.status().code() == absl::StatusCode::kOutOfRange) {
            keep_alive_ = false;
            return Reply(RestApi::Error(
                413,
                absl::StrCat("Payload too large: the inflated body exceeds ",
                             server_.options().max_body_bytes, " bytes (max_request_size_mb)")));
          }
          return Reply(RestApi::Error(400, inflated.status().message()));
        }
        body = *std::move(inflated);
      } else if (name != "identity" && !name.empty()) {
        return Reply(
            RestApi::Error(415, absl::StrCat("Unsupported Content-Encoding `", name,
                                             "`: qdrant-emulator inflates gzip and deflate")));
      }
    }
    const absl::string_view method(request.method_string().data(), request.method_string().size());
    const absl::string_view target(request.target().data(), request.target().size());
    call_ = server_.api().Resolve(method, target, std::move(body));
    if (!call_.has_value()) return Reply(RestApi::NoRoute(method, target));
    if (!server_.options().api_key.empty()) {
      // Qdrant's authentication, counted per key as on the gRPC port: the full key, or the
      // read-only key for a route that writes nothing; refused requests are not counted as calls.
      const absl::string_view sent = SentKey(request);
      const bool write = !call_->write_collection.empty();
      if (call_->public_route) {
        server_.faults().CountKey(sent.empty()                        ? "none"
                                  : sent == server_.options().api_key ? "full"
                                                                      : "other");
      } else if (!sent.empty() && sent == server_.options().api_key) {
        server_.faults().CountKey("full");
      } else if (!sent.empty() && !server_.options().read_only_api_key.empty() &&
                 sent == server_.options().read_only_api_key) {
        if (write) {
          server_.faults().CountKey("refused");
          return Reply(RestApi::Error(403, "Forbidden: Write access denied for read-only API key"));
        }
        server_.faults().CountKey("read_only");
      } else {
        server_.faults().CountKey("refused");
        return Reply(
            RestApi::Error(401, "Must provide an API key or an Authorization bearer token"));
      }
    }
    plan_ = server_.faults().OnCall(call_->method);
    if (plan_.hang) {
      server_.Park(Self());
      return;
    }
    if (plan_.delay > absl::ZeroDuration()) {
      timer_.expires_after(absl::ToChronoMicroseconds(plan_.delay));
      timer_.async_wait([self = Self()](beast::error_code ec) {
        if (!ec) self->Proceed();
      });
      return;
    }
    Proceed();
  }

  // The key a request carries: header api-key, else Authorization: Bearer (as Qdrant reads them).
  static absl::string_view SentKey(const http::request<http::string_body>& request) {
    if (auto it = request.find("api-key"); it != request.end()) {
      return absl::string_view(it->value().data(), it->value().size());
    }
    if (auto it = request.find(http::field::authorization); it != request.end()) {
      absl::string_view value(it->value().data(), it->value().size());
      if (absl::ConsumePrefix(&value, "Bearer ")) return value;
    }
    return {};
  }

  RestReply InjectedReply() {
    server_.faults().CountInjectedError();
    const InjectedError& error = *plan_.error;
    RestReply reply = RestApi::FromStatus(absl::Status(error.code, error.message));
    reply.retry_after_s = error.retry_after_s;
    return reply;
  }

  void Reply(RestReply reply) {
    if (closed_) return;
    auto response = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(reply.status), version_);
    response->set(http::field::server, "qdrant-emulator");
    response->set(http::field::content_type, reply.content_type);
    if (reply.retry_after_s > 0) {
      response->set(http::field::retry_after, std::to_string(reply.retry_after_s));
    }
    if (server_.options().gzip_answers) response->set(http::field::vary, "accept-encoding");
    if (gzip_answer_ && !reply.body.empty()) {
      if (std::string compressed = Gzip(reply.body); !compressed.empty()) {
        response->set(http::field::content_encoding, "gzip");
        reply.body = std::move(compressed);
      }
    }
    gzip_answer_ = false;
    response->body() = std::move(reply.body);
    const bool keep_alive = keep_alive_ && !close_after_answer_ && !server_.stopping();
    response->keep_alive(keep_alive);
    response->prepare_payload();
    http::async_write(stream_, *response,
                      [self = Self(), response, keep_alive](beast::error_code ec, size_t) {
                        if (ec) return self->Close();
                        // Connection: close was sent, or a goaway came while the answer was being
                        // written.
                        if (!keep_alive || self->close_after_answer_ || self->server_.stopping()) {
                          return self->LingeringClose();
                        }
                        self->call_.reset();
                        self->ReadHeader();
                      });
  }

  // After a last answer: FIN now, then read and discard what the peer still sends (the rest of a
  // refused body) for up to a second, so that closing with unread bytes does not RST the answer
  // away before the peer read it.
  void LingeringClose() {
    if (closed_) return;
    beast::error_code ignored;
    Lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    Lowest().expires_after(std::chrono::seconds(1));
    Drain();
  }

  void Drain() {
    stream_.async_read_some(asio::buffer(drain_), [self = Self()](beast::error_code ec, size_t) {
      if (ec || self->closed_) return self->Close();
      self->Drain();
    });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    timer_.cancel();
    beast::error_code ignored;
    Lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    Lowest().socket().close(ignored);
  }

  RestServer::Impl& server_;
  std::shared_ptr<asio::ssl::context> tls_context_;  // kTls: the context stream_ was made with
  Stream stream_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<RestCall> call_;
  CallPlan plan_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool idle_ = true;  // Waiting for (the headers of) the next request.
  bool close_after_answer_ = false;
  bool closed_ = false;
  bool handshake_done_ = false;  // kTls: the TLS handshake finished
  bool gzip_answer_ = false;     // The request accepts a gzip answer (and gzip_answers is on).
  std::array<char, 4096> drain_;
};

void RestServer::Impl::Accept() {
  acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || stopping_) return;
    if (ec) {
      // Out of file descriptors or the like: try again shortly rather than spin.
      auto timer = std::make_shared<asio::steady_timer>(ioc_, std::chrono::milliseconds(50));
      timer->async_wait([this, timer](beast::error_code) {
        if (!stopping_) Accept();
      });
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<RestSessionOn<beast::tcp_stream>>(*this, std::move(socket))->Start();
    Accept();
  });
}

void RestServer::Impl::AcceptTls() {
  tls_acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || stopping_) return;
    if (ec) {
      auto timer = std::make_shared<asio::steady_timer>(ioc_, std::chrono::milliseconds(50));
      timer->async_wait([this, timer](beast::error_code) {
        if (!stopping_) AcceptTls();
      });
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<RestSessionOn<beast::ssl_stream<beast::tcp_stream>>>(*this, std::move(socket),
                                                                          tls_context_)
        ->Start();
    AcceptTls();
  });
}

void RestServer::Impl::ScheduleTlsReload() {
  reload_timer_.expires_after(std::chrono::seconds(options_.tls_reload_seconds));
  reload_timer_.async_wait([this](beast::error_code ec) {
    if (ec || stopping_) return;
    ReloadTls();
    ScheduleTlsReload();
  });
}

void RestServer::Impl::ReloadTls() {
  std::optional<std::vector<std::string>> files = ReadTlsFiles(options_);
  if (!files.has_value() || *files == tls_files_) return;
  tls_files_ = *std::move(files);
  absl::StatusOr<std::shared_ptr<asio::ssl::context>> context = MakeServerTls(options_);
  faults_.CountRestTlsReload(context.ok());
  if (!context.ok()) {
    std::cerr << "qdrant-emulator: REST TLS files changed but do not load, keeping the previous "
                 "ones: "
              << context.status().message() << "\n";
    return;
  }
  tls_context_ = *std::move(context);
  std::cerr << "qdrant-emulator: REST TLS files changed: new connections get them\n";
}

void RestServer::Impl::CloseAbruptly() {
  std::vector<RestSession*> open;
  for (RestSession* session : sessions_) {
    if (!session->closed()) open.push_back(session);
  }
  // Counted first: a peer that sees its reset may read the counters at once.
  faults_.CountAbruptCloses(open.size());
  for (RestSession* session : open) session->Abort();
}

void RestServer::Impl::CloseGracefully() {
  std::vector<RestSession*> sessions(sessions_.begin(), sessions_.end());
  for (RestSession* session : sessions) session->CloseGracefully();
}

void RestServer::Impl::ReleaseParked(bool stopping) {
  std::vector<std::shared_ptr<RestSession>> parked = std::move(parked_);
  parked_.clear();
  for (std::shared_ptr<RestSession>& session : parked) {
    if (stopping) {
      session->RefuseStopping();
    } else if (faults_.ShouldHang(session->method())) {
      parked_.push_back(std::move(session));
    } else {
      session->Proceed();
    }
  }
}

void RestServer::Impl::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    if (!thread_.joinable()) return;
    asio::post(ioc_, [this] {
      stopping_ = true;
      beast::error_code ignored;
      acceptor_.close(ignored);
      tls_acceptor_.close(ignored);
      reload_timer_.cancel();
      ReleaseParked(/*stopping=*/true);  // Answered 503, then closed.
      CloseGracefully();                 // Idle ones now, busy ones after their answer.
      if (sessions_.empty()) {
        ioc_.stop();
        return;
      }
      // The last session to go stops the loop (Unregister); a peer that does not read its answer
      // holds it up for two seconds at most.
      auto timer = std::make_shared<asio::steady_timer>(ioc_, std::chrono::seconds(2));
      timer->async_wait([this, timer](beast::error_code) { ioc_.stop(); });
    });
    thread_.join();
  });
}

absl::StatusOr<std::unique_ptr<RestServer>> RestServer::Start(const RestServerOptions& options,
                                                              Storage& storage,
                                                              const HandlerOptions& handlers,
                                                              FaultInjector& faults) {
  std::shared_ptr<asio::ssl::context> tls_context;
  int tls_fd = -1;
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::shared_ptr<asio::ssl::context>> context = MakeServerTls(options);
    if (!context.ok()) return context.status();
    tls_context = *std::move(context);
    absl::StatusOr<int> fd = ListenTcp(options.tls_listen);
    if (!fd.ok()) return fd.status();
    tls_fd = *fd;
  }
  absl::StatusOr<int> fd = ListenTcp(options.listen);
  if (!fd.ok()) {
    if (tls_fd >= 0) close(tls_fd);
    return fd.status();
  }
  auto impl = std::make_unique<Impl>(options, storage, handlers, faults, *fd, tls_fd,
                                     std::move(tls_context));
  if (absl::Status status = impl->Start(); !status.ok()) return status;
  return std::unique_ptr<RestServer>(new RestServer(std::move(impl)));
}

RestServer::RestServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RestServer::~RestServer() { Shutdown(); }
const std::string& RestServer::address() const { return impl_->address(); }
const std::string& RestServer::tls_address() const { return impl_->tls_address(); }
void RestServer::CloseConnections(CloseMode mode) { impl_->CloseConnections(mode); }
void RestServer::ReleaseParkedCalls() { impl_->ReleaseParkedCalls(); }
void RestServer::Shutdown() { impl_->Shutdown(); }

}  // namespace qpool::emulator
