#include "daemon/server/health_probe.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "daemon/common/grpc_code.h"
#include "daemon/common/grpc_frame.h"
#include "daemon/server/grpc_wire.h"
#include "daemon/server/header_block.h"
#include "daemon/server/node_probes.h"
#include "daemon/server/worker.h"
#include "spdlog/spdlog.h"

namespace qpool::server {
namespace {

// A protobuf reader just big enough for the replies probes look at: varint and length-delimited
// fields; 32- and 64-bit fields are skipped.
class ProtoReader {
 public:
  explicit ProtoReader(std::string_view data)
      : p_(reinterpret_cast<const uint8_t*>(data.data())), end_(p_ + data.size()) {}

  // The next field; false at the end or on malformed input (then `ok()` is false).
  bool Next(uint32_t* field, uint64_t* varint, std::string_view* bytes) {
    while (p_ < end_) {
      uint64_t key;
      if (!Varint(&key)) return Fail();
      *field = static_cast<uint32_t>(key >> 3);
      switch (key & 7) {
        case 0:
          if (!Varint(varint)) return Fail();
          *bytes = {};
          return true;
        case 2: {
          uint64_t len;
          if (!Varint(&len) || len > static_cast<uint64_t>(end_ - p_)) return Fail();
          *bytes = std::string_view(reinterpret_cast<const char*>(p_), len);
          p_ += len;
          *varint = 0;
          return true;
        }
        case 1:
          if (end_ - p_ < 8) return Fail();
          p_ += 8;
          break;
        case 5:
          if (end_ - p_ < 4) return Fail();
          p_ += 4;
          break;
        default:
          return Fail();
      }
    }
    return false;
  }
  bool ok() const { return ok_; }

 private:
  bool Varint(uint64_t* out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 64 && p_ < end_; shift += 7) {
      const uint8_t byte = *p_++;
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *out = value;
        return true;
      }
    }
    return false;
  }
  bool Fail() {
    ok_ = false;
    return false;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

health::ProbeResult Failed(std::string detail) {
  health::ProbeResult result;
  result.detail = std::move(detail);
  return result;
}

}  // namespace

ProbeSpec ProbeSpec::QdrantHealthCheck() {
  return {"/qdrant.Qdrant/HealthCheck", "", Check::kQdrantHealth, "qdrant.Qdrant/HealthCheck",
          /*api_key=*/""};
}

ProbeSpec ProbeSpec::GrpcHealthCheck() {
  return {"/grpc.health.v1.Health/Check", "", Check::kGrpcHealth, "grpc.health.v1.Health/Check",
          /*api_key=*/""};
}

ProbeSpec ProbeSpec::ListCollections() {
  return {"/qdrant.Collections/List", "", Check::kStatusOk, "qdrant.Collections/List",
          /*api_key=*/""};
}

ProbeSpec ProbeSpec::CollectionExists(const std::string& collection) {
  // CollectionExistsRequest { string collection_name = 1; } (names are at most 255 bytes).
  std::string message;
  message += '\x0a';
  size_t len = collection.size();
  while (len >= 0x80) {
    message += static_cast<char>((len & 0x7f) | 0x80);
    len >>= 7;
  }
  message += static_cast<char>(len);
  message += collection;
  return {"/qdrant.Collections/CollectionExists", message, Check::kCollectionExists,
          absl::StrCat("qdrant.Collections/CollectionExists(", collection, ")"), /*api_key=*/""};
}

health::ProbeResult JudgeProbeAnswer(const ProbeSpec& spec, int grpc_status,
                                     std::string_view grpc_message, std::string_view body) {
  if (grpc_status < 0) return Failed(absl::StrCat(spec.description, ": no grpc-status"));
  if (grpc_status != kGrpcOk) {
    // UNAUTHENTICATED / PERMISSION_DENIED: Qdrant wants an API key for this read.
    const bool auth = grpc_status == kGrpcUnauthenticated || grpc_status == kGrpcPermissionDenied;
    return Failed(absl::StrCat(
        spec.description, ": grpc-status ", grpc_status, " ",
        absl::string_view(grpc_message.data(), grpc_message.size()),
        auth ? (spec.api_key.empty()
                    ? " (Qdrant needs an API key: set upstream.api_key_file or "
                      "upstream.api_key_env)"
                    : " (Qdrant refused qpoold's API key: check upstream.api_key_file or "
                      "upstream.api_key_env)")
             : ""));
  }
  health::ProbeResult ok;
  ok.success = true;
  if (spec.check == ProbeSpec::Check::kStatusOk) return ok;
  // One gRPC message: flag byte, 4-byte length, the message. Probes advertise no compression.
  if (body.size() < kGrpcFramePrefixBytes || body[0] != 0) {
    return Failed(absl::StrCat(spec.description, ": no uncompressed reply message"));
  }
  const size_t len = GrpcFrameLength(body);
  if (body.size() - kGrpcFramePrefixBytes < len) {
    return Failed(absl::StrCat(spec.description, ": truncated reply"));
  }
  ProtoReader reader(body.substr(kGrpcFramePrefixBytes, len));
  uint32_t field;
  uint64_t varint;
  std::string_view bytes;
  switch (spec.check) {
    case ProbeSpec::Check::kStatusOk:
      return ok;
    case ProbeSpec::Check::kQdrantHealth:
      // HealthCheckReply { string title = 1; string version = 2; optional string commit = 3; }
      while (reader.Next(&field, &varint, &bytes)) {
        if (field == 2) ok.version = std::string(bytes);
      }
      if (!reader.ok()) return Failed(absl::StrCat(spec.description, ": malformed reply"));
      return ok;
    case ProbeSpec::Check::kGrpcHealth: {
      // HealthCheckResponse { ServingStatus status = 1; }, SERVING = 1; absent means UNKNOWN (0).
      uint64_t status = 0;
      while (reader.Next(&field, &varint, &bytes)) {
        if (field == 1) status = varint;
      }
      if (!reader.ok()) return Failed(absl::StrCat(spec.description, ": malformed reply"));
      if (status != 1) return Failed(absl::StrCat(spec.description, ": status ", status));
      return ok;
    }
    case ProbeSpec::Check::kCollectionExists: {
      // CollectionExistsResponse { CollectionExists result = 1; double time = 2; },
      // CollectionExists { bool exists = 1; }.
      bool exists = false;
      while (reader.Next(&field, &varint, &bytes)) {
        if (field != 1) continue;
        ProtoReader inner(bytes);
        uint32_t inner_field;
        uint64_t inner_varint;
        std::string_view inner_bytes;
        while (inner.Next(&inner_field, &inner_varint, &inner_bytes)) {
          if (inner_field == 1) exists = inner_varint != 0;
        }
      }
      if (!reader.ok()) return Failed(absl::StrCat(spec.description, ": malformed reply"));
      if (!exists) return Failed(absl::StrCat(spec.description, ": the collection does not exist"));
      return ok;
    }
  }
  return ok;
}

HealthProbe::HealthProbe(Worker& worker, pool::NodePool& pool, std::string authority,
                         ProbeSpec spec, Duration timeout, Done done)
    : worker_(worker),
      pool_(pool),
      authority_(std::move(authority)),
      spec_(std::move(spec)),
      timeout_(timeout),
      done_(std::move(done)),
      timer_(worker.connection_context().loop.CreateTimer()) {
  request_body = GrpcFrame(spec_.message);
  set_probe();  // never waits behind app calls in the pool's queue (docs/security.md)
}

HealthProbe::~HealthProbe() {
  // The worker deletes probes after they finished, or at its stop once its pools are gone (a pool
  // forgets its queued waiters without calling them); either way nothing is left to cancel.
  timer_->Cancel();
}

void HealthProbe::Start() {
  timer_->Arm(timeout_, [this] { OnTimeout(); });
  pool::NodePool::AcquireResult result = pool_.Acquire(*this);
  switch (result.outcome) {
    case pool::NodePool::AcquireOutcome::kReady:
      Submit(*static_cast<UpstreamConnection*>(result.connection));
      break;
    case pool::NodePool::AcquireOutcome::kQueued:
      break;  // OnStreamReady or OnAcquireFailed follows, or the timeout
    case pool::NodePool::AcquireOutcome::kFailed:
      Finish(Failed(std::string(result.status.message())));
      break;
  }
}

void HealthProbe::OnStreamReady(pool::PoolConnection* conn) {
  Submit(*static_cast<UpstreamConnection*>(conn));
}

void HealthProbe::OnAcquireFailed(const absl::Status& status) {
  Finish(Failed(std::string(status.message())));
}

void HealthProbe::Submit(UpstreamConnection& conn) {
  // The key qpoold holds now (probes are reads: the read-only key when there is one).
  if (spec_.api_key.empty()) {
    if (const auth::ApiKeys* keys = worker_.api_keys())
      spec_.api_key = std::string(keys->For(/*read=*/true));
  }
  const std::string timeout = FormatGrpcTimeout(timeout_);
  nghttp2_nv nva[] = {
      MakeNv(":method", "POST"),
      MakeNv(":scheme", conn.secure() ? "https" : "http"),
      MakeNv(":path", spec_.path),
      MakeNv(":authority", authority_),
      MakeNv("content-type", "application/grpc"),
      MakeNv("te", "trailers"),
      MakeNv("grpc-timeout", timeout),
      MakeNv("user-agent", "qpoold-health/" QPOOL_VERSION),
      ApiKeyNv(spec_.api_key),
  };
  size_t count = sizeof(nva) / sizeof(nva[0]);
  if (spec_.api_key.empty()) count--;  // the last one
  const int32_t stream_id = conn.SubmitProbe(*this, nva, count);
  if (stream_id < 0) {
    pool_.ReleaseUnused(&conn);
    Finish(Failed(absl::StrCat("cannot open a stream: ", nghttp2_strerror(stream_id))));
    return;
  }
  conn_ = conn.shared_from_this();
  stream_id_ = stream_id;
}

void HealthProbe::OnProbeHeader(std::string_view name, std::string_view value) {
  if (name == "grpc-status") {
    int code = 0;
    for (char c : value) {
      if (c < '0' || c > '9' || code > 1000) return;
      code = code * 10 + (c - '0');
    }
    if (!value.empty()) grpc_status_ = code;
  } else if (name == "grpc-message") {
    grpc_message_ = std::string(value.substr(0, 200));
  }
}

void HealthProbe::OnProbeData(const uint8_t* data, size_t len) {
  if (body_.size() + len <= kMaxBody) body_.append(reinterpret_cast<const char*>(data), len);
}

void HealthProbe::OnProbeClosed(uint32_t h2_error_code, bool connection_lost) {
  conn_.reset();
  stream_id_ = -1;
  if (connection_lost) {
    Finish(Failed(absl::StrCat(spec_.description, ": connection lost")));
  } else if (grpc_status_ < 0 && h2_error_code != NGHTTP2_NO_ERROR) {
    Finish(Failed(
        absl::StrCat(spec_.description, ": stream reset (HTTP/2 error ", h2_error_code, ")")));
  } else {
    Finish(JudgeProbeAnswer(spec_, grpc_status_, grpc_message_, body_));
  }
}

void HealthProbe::OnTimeout() {
  Finish(Failed(absl::StrCat(spec_.description, ": no answer within ",
                             absl::FormatDuration(absl::FromChrono(timeout_)))));
}

void HealthProbe::Finish(health::ProbeResult result) {
  if (finished_) return;
  finished_ = true;
  timer_->Cancel();
  pool_.CancelWait(*this);  // no-op unless still queued
  if (conn_ != nullptr) {
    static_cast<UpstreamConnection*>(conn_.get())->ResetProbe(stream_id_);
    conn_.reset();
  }
  Done done = std::move(done_);
  done(std::move(result));
  worker_.probes().OnProbeDone(this);
}

}  // namespace qpool::server
