#include "daemon/tls/client_tls.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace qpool::tls {
namespace {

constexpr char kReasonPayload[] = "type.qpool.dev/tls_failure";
constexpr char kConnectPayload[] = "type.qpool.dev/connect_failure";

// OpenSSL's queued errors, oldest first, as one line; clears the queue.
std::string OpenSslErrors() {
  std::string text;
  while (const unsigned long error = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(error, buffer, sizeof(buffer));
    absl::StrAppend(&text, text.empty() ? "" : "; ", buffer);
  }
  return text.empty() ? std::string("no details from OpenSSL") : text;
}

// Where an SSL_CTX keeps its ClientContext (for the new-session callback). Not the "app data"
// slot: Asio's ssl::context keeps its verify callback there and deletes it on destruction.
int ContextIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int NoPassphrase(char*, int, int, void*) { return 0; }

bool IsIpLiteral(const std::string& host) {
  unsigned char scratch[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), scratch) == 1 ||
         inet_pton(AF_INET6, host.c_str(), scratch) == 1;
}

}  // namespace

const char* FailureReasonName(FailureReason reason) {
  switch (reason) {
    case FailureReason::kExpired:
      return "expired";
    case FailureReason::kUnknownCa:
      return "unknown_ca";
    case FailureReason::kNameMismatch:
      return "name_mismatch";
    case FailureReason::kVerify:
      return "verify";
    case FailureReason::kClientCert:
      return "client_cert";
    case FailureReason::kAlpn:
      return "alpn";
    case FailureReason::kHandshake:
      return "handshake";
  }
  return "handshake";
}

absl::Status WithFailureReason(absl::Status status, FailureReason reason) {
  status.SetPayload(kReasonPayload, absl::Cord(std::string(1, static_cast<char>(reason))));
  return status;
}

std::optional<FailureReason> FailureReasonOf(const absl::Status& status) {
  auto payload = status.GetPayload(kReasonPayload);
  if (!payload || payload->size() != 1) return std::nullopt;
  const auto value = static_cast<uint8_t>(std::string(*payload)[0]);
  if (value >= kFailureReasonCount) return std::nullopt;
  return static_cast<FailureReason>(value);
}

absl::Status WithConnectFailure(absl::Status status, ConnectFailure failure) {
  status.SetPayload(kConnectPayload, absl::Cord(std::string(1, static_cast<char>(failure))));
  return status;
}

std::optional<ConnectFailure> ConnectFailureOf(const absl::Status& status) {
  auto payload = status.GetPayload(kConnectPayload);
  if (!payload || payload->size() != 1) return std::nullopt;
  const auto value = static_cast<uint8_t>(std::string(*payload)[0]);
  if (value > static_cast<uint8_t>(ConnectFailure::kTimeout)) return std::nullopt;
  return static_cast<ConnectFailure>(value);
}

size_t ConnectFailureSlot(const absl::Status& status) {
  if (std::optional<FailureReason> tls = FailureReasonOf(status)) return static_cast<size_t>(*tls);
  if (std::optional<ConnectFailure> failure = ConnectFailureOf(status)) {
    return kFailureReasonCount + static_cast<size_t>(*failure);
  }
  return kFailureReasonCount + 2;
}

const char* ConnectFailureSlotName(size_t slot) {
  if (slot < kFailureReasonCount) return FailureReasonName(static_cast<FailureReason>(slot));
  if (slot == kFailureReasonCount) return "connect";
  if (slot == kFailureReasonCount + 1) return "timeout";
  return "other";
}

// --- ClientContext -----------------------------------------------------------------------------

ClientContext::ClientContext(std::string server_name, std::string alpn, bool verify)
    : context_(boost::asio::ssl::context::tls_client),
      server_name_(std::move(server_name)),
      alpn_(std::move(alpn)),
      verify_(verify) {}

ClientContext::~ClientContext() {
  absl::MutexLock lock(&mu_);
  if (session_ != nullptr) SSL_SESSION_free(session_);
}

absl::StatusOr<std::shared_ptr<const ClientContext>> ClientContext::Create(
    const config::TlsOptions& options, const std::string& default_server_name, std::string alpn) {
  ERR_clear_error();
  const std::string server_name =
      options.server_name.empty() ? default_server_name : options.server_name;
  std::shared_ptr<ClientContext> context(
      new ClientContext(server_name, std::move(alpn), options.verify));
  SSL_CTX* ctx = context->context_.native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // Clients keep sessions themselves (OnNewSession); OpenSSL's internal cache is for servers.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &ClientContext::OnNewSession);
  // Keys must be unencrypted: never let OpenSSL prompt on a terminal for a passphrase.
  SSL_CTX_set_default_passwd_cb(ctx, &NoPassphrase);
  SSL_CTX_set_ex_data(ctx, ContextIndex(), context.get());

  boost::system::error_code ec;
  if (options.ca_file.empty()) {
    context->context_.set_default_verify_paths(ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load the system CA store: ", OpenSslErrors()));
    }
  } else {
    context->context_.load_verify_file(options.ca_file, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("upstream.tls.ca_file ", options.ca_file,
                                                     ": cannot load: ", OpenSslErrors()));
    }
  }
  context->context_.set_verify_mode(
      options.verify ? boost::asio::ssl::verify_peer : boost::asio::ssl::verify_none, ec);
  if (!options.cert_file.empty()) {
    context->context_.use_certificate_chain_file(options.cert_file, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("upstream.tls.cert_file ", options.cert_file,
                                                     ": cannot load: ", OpenSslErrors()));
    }
    context->context_.use_private_key_file(options.key_file, boost::asio::ssl::context::pem, ec);
    if (ec) {
      ERR_clear_error();
      // A key that loads on its own but not into the context belongs to another certificate.
      bool readable = false;
      if (BIO* file = BIO_new_file(options.key_file.c_str(), "r")) {
        if (EVP_PKEY* key = PEM_read_bio_PrivateKey(file, nullptr, &NoPassphrase, nullptr)) {
          readable = true;
          EVP_PKEY_free(key);
        }
        BIO_free(file);
      }
      ERR_clear_error();
      if (readable) {
        return absl::InvalidArgumentError(absl::StrCat("upstream.tls.key_file ", options.key_file,
                                                       " does not match upstream.tls.cert_file ",
                                                       options.cert_file));
      }
      // Deliberately no OpenSSL detail that could quote key material: just the file and why.
      return absl::InvalidArgumentError(
          absl::StrCat("upstream.tls.key_file ", options.key_file,
                       ": cannot load the private key (PEM, unencrypted)"));
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      ERR_clear_error();
      return absl::InvalidArgumentError(absl::StrCat("upstream.tls.key_file ", options.key_file,
                                                     " does not match upstream.tls.cert_file ",
                                                     options.cert_file));
    }
  }
  // ALPN: one length-prefixed protocol name.
  std::string wire(1, static_cast<char>(context->alpn_.size()));
  wire += context->alpn_;
  if (SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                              static_cast<unsigned>(wire.size())) != 0) {
    return absl::InternalError(absl::StrCat("cannot set ALPN: ", OpenSslErrors()));
  }
  return std::shared_ptr<const ClientContext>(std::move(context));
}

int ClientContext::OnNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* self =
      static_cast<const ClientContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ContextIndex()));
  if (self == nullptr) return 0;
  self->StoreSession(session);
  return 1;  // we keep the reference
}

void ClientContext::StoreSession(SSL_SESSION* session) const {
  absl::MutexLock lock(&mu_);
  if (session_ != nullptr) SSL_SESSION_free(session_);
  session_ = session;
}

absl::StatusOr<std::unique_ptr<TlsEngine>> ClientContext::NewEngine() const {
  SSL* ssl = SSL_new(const_cast<boost::asio::ssl::context&>(context_).native_handle());
  if (ssl == nullptr) return absl::InternalError("SSL_new failed");
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  if (in == nullptr || out == nullptr) {
    BIO_free(in);
    BIO_free(out);
    SSL_free(ssl);
    return absl::InternalError("BIO_new failed");
  }
  BIO_set_mem_eof_return(in, -1);  // empty input: "retry later", not EOF
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  if (IsIpLiteral(server_name_)) {
    // No SNI for an address (RFC 6066); the certificate must list it as an IP SAN.
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name_.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl, server_name_.c_str());
    SSL_set1_host(ssl, server_name_.c_str());
  }
  {
    absl::MutexLock lock(&mu_);
    if (session_ != nullptr) SSL_set_session(ssl, session_);
  }
  auto engine = std::unique_ptr<TlsEngine>(new TlsEngine(shared_from_this(), ssl));
  engine->network_in_ = in;
  engine->network_out_ = out;
  return engine;
}

// --- TlsEngine ---------------------------------------------------------------------------------

TlsEngine::TlsEngine(std::shared_ptr<const ClientContext> context, SSL* ssl)
    : context_(std::move(context)), ssl_(ssl), network_in_(nullptr), network_out_(nullptr) {}

TlsEngine::~TlsEngine() {
  // A gentle close sent a close_notify (Shutdown(): SSL_SENT_SHUTDOWN is set). Other closes have
  // none: an aborted connection, one lost or reset, one the node closed. SSL_free would take that
  // as an unclean end and mark the connection's session, the very one the context keeps for the
  // next connect, not resumable: every reconnect would then run a full handshake. Say the
  // shutdown happened (TLS 1.3 no longer ties resumption to close_notify, RFC 8446 section 6.1),
  // except for a connection that failed in TLS itself.
  if (handshake_done_ && !failed_) {
    SSL_set_shutdown(ssl_, SSL_get_shutdown(ssl_) | SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  }
  SSL_free(ssl_);
}

void TlsEngine::FeedInput(const uint8_t* data, size_t len) {
  while (len > 0) {
    const int n = BIO_write(network_in_, data, static_cast<int>(std::min<size_t>(len, 1 << 30)));
    if (n <= 0) return;  // a memory BIO only fails when out of memory
    data += n;
    len -= static_cast<size_t>(n);
  }
}

void TlsEngine::TakeOutput(std::vector<uint8_t>& out) {
  const size_t pending = BIO_ctrl_pending(network_out_);
  if (pending == 0) return;
  const size_t at = out.size();
  out.resize(at + pending);
  const int n = BIO_read(network_out_, out.data() + at, static_cast<int>(pending));
  out.resize(at + (n > 0 ? static_cast<size_t>(n) : 0));
}

bool TlsEngine::HasOutput() const { return BIO_ctrl_pending(network_out_) > 0; }

bool TlsEngine::resumed() const { return SSL_session_reused(ssl_) == 1; }

std::string_view TlsEngine::alpn_selected() const {
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &data, &len);
  return {reinterpret_cast<const char*>(data), len};
}

std::string TlsEngine::PeerSummary() const {
  std::string summary;
  if (X509* peer = SSL_get1_peer_certificate(ssl_)) {
    char subject[256];
    X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
    std::string serial = "?";
    if (BIGNUM* number = ASN1_INTEGER_to_BN(X509_get_serialNumber(peer), nullptr)) {
      if (char* hex = BN_bn2hex(number)) {
        serial = hex;
        OPENSSL_free(hex);
      }
      BN_free(number);
    }
    summary = absl::StrCat("subject ", subject, ", serial ", serial, ", ");
    X509_free(peer);
  }
  absl::StrAppend(&summary, SSL_get_version(ssl_), resumed() ? ", resumed" : "");
  return summary;
}

absl::StatusOr<bool> TlsEngine::Handshake() {
  if (handshake_done_) return true;
  ERR_clear_error();
  const int result = SSL_do_handshake(ssl_);
  if (result != 1) {
    const int error = SSL_get_error(ssl_, result);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return false;
    return Failure(result, "handshake");
  }
  handshake_done_ = true;
  // gRPC needs the node to agree to h2. An HTTP/1.1 server that does not take part in ALPN at all
  // (no protocol selected) speaks HTTP/1.1 anyway: only another protocol is refused for REST.
  const bool required = context_->alpn() == "h2";
  if ((required || !alpn_selected().empty()) && alpn_selected() != context_->alpn()) {
    const std::string_view got = alpn_selected();
    return WithFailureReason(
        absl::UnavailableError(absl::StrCat(
            "TLS: the node did not agree to ", context_->alpn(), " (ALPN ",
            got.empty() ? std::string("none") : absl::StrCat("\"", std::string(got), "\""),
            context_->alpn() == "h2" ? "): is this Qdrant's gRPC port (6334), with TLS on?"
                                     : "): is this Qdrant's REST port (6333)?")),
        FailureReason::kAlpn);
  }
  return true;
}

absl::StatusOr<size_t> TlsEngine::Read(uint8_t* buffer, size_t capacity) {
  ERR_clear_error();
  size_t n = 0;
  const int result = SSL_read_ex(ssl_, buffer, capacity, &n);
  if (result == 1) return n;
  const int error = SSL_get_error(ssl_, result);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return size_t{0};
  if (error == SSL_ERROR_ZERO_RETURN) {
    return absl::UnavailableError("peer closed the TLS connection");
  }
  return Failure(result, "read");
}

absl::Status TlsEngine::Write(const uint8_t* data, size_t len) {
  if (len == 0) return absl::OkStatus();
  ERR_clear_error();
  size_t written = 0;
  if (SSL_write_ex(ssl_, data, len, &written) == 1 && written == len) return absl::OkStatus();
  return Failure(0, "write");
}

absl::Status TlsEngine::Shutdown() {
  if (!handshake_done_ || failed_) {
    return absl::FailedPreconditionError("no TLS connection to close cleanly");
  }
  ERR_clear_error();
  // 0: our close_notify is queued, the peer's not seen yet; 1: the peer's came first. We do not
  // wait for the peer's (RFC 8446 section 6.1 lets the closing side go).
  if (SSL_shutdown(ssl_) < 0) {
    return absl::InternalError(absl::StrCat("TLS close_notify: ", OpenSslErrors()));
  }
  return absl::OkStatus();
}

absl::Status TlsEngine::Failure(int ssl_result, std::string_view during) {
  failed_ = true;
  // A certificate the client refused: the verify result says why.
  const long verify = SSL_get_verify_result(ssl_);
  if (!handshake_done_ && context_->verify() && verify != X509_V_OK) {
    ERR_clear_error();
    FailureReason reason = FailureReason::kVerify;
    switch (verify) {
      case X509_V_ERR_CERT_HAS_EXPIRED:
      case X509_V_ERR_CERT_NOT_YET_VALID:
        reason = FailureReason::kExpired;
        break;
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        reason = FailureReason::kUnknownCa;
        break;
      case X509_V_ERR_HOSTNAME_MISMATCH:
      case X509_V_ERR_IP_ADDRESS_MISMATCH:
        reason = FailureReason::kNameMismatch;
        break;
      default:
        break;
    }
    std::string hint;
    if (reason == FailureReason::kUnknownCa) hint = " (set upstream.tls.ca_file to the node's CA)";
    if (reason == FailureReason::kNameMismatch) {
      hint = absl::StrCat(" (the certificate does not name \"", context_->server_name(),
                          "\": set upstream.tls.server_name to a name it lists)");
    }
    return WithFailureReason(
        absl::UnavailableError(absl::StrCat("TLS: the node's certificate was refused: ",
                                            X509_verify_cert_error_string(verify), hint)),
        reason);
  }
  const unsigned long first = ERR_peek_error();
  const int lib_reason = ERR_GET_REASON(first);
  const std::string details = OpenSslErrors();
  const int error = SSL_get_error(ssl_, ssl_result);
  if (error == SSL_ERROR_SYSCALL && first == 0) {
    return WithFailureReason(absl::UnavailableError(absl::StrCat(
                                 "TLS ", std::string(during), ": the node closed the connection")),
                             FailureReason::kHandshake);
  }
  FailureReason reason = FailureReason::kHandshake;
  std::string hint;
  switch (lib_reason) {
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      reason = FailureReason::kClientCert;
      hint =
          " (the node refused the client certificate, or wants one: set "
          "upstream.tls.cert_file and key_file)";
      break;
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
      hint = " (the node does not speak TLS on this port: is service.enable_tls on?)";
      break;
    default:
      break;
  }
  return WithFailureReason(
      absl::UnavailableError(absl::StrCat("TLS ", std::string(during), " failed: ", details, hint)),
      reason);
}

}  // namespace qpool::tls
