// The Qdrant API keys qpoold holds for the apps: a full key and, optionally, a read-only key for
// calls of the read class. Loaded from files (upstream.api_key_file, re-read when they change)
// or environment variables (read at start), and published as immutable snapshots.
//
//   auto store = ApiKeyStore::Create(config);        // start: a missing or empty key is an error
//   ApiKeyCache cache(**store);                       // one per worker
//   std::string_view key = cache.Get().For(/*read=*/true);
//   store->Reload();                                  // secrets thread, every poll interval
//
// A key never appears in a log line, a metric, an error message or /pool: messages name the file
// or variable only. A key file that turns empty or unreadable keeps the previous key and says so.
// What a call "started with": a call takes the snapshot (ApiKeyCache::Snapshot) when its first
// attempt starts and sends that key on every attempt (retries and hedges included), so a change
// affects only calls that start after it.
//
// Thread-safety: ApiKeyStore is thread-safe; Reload() is called from one thread. An ApiKeyCache
// belongs to one thread.
#ifndef QPOOL_DAEMON_AUTH_API_KEYS_H_
#define QPOOL_DAEMON_AUTH_API_KEYS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/common/file_fingerprint.h"
#include "daemon/config/config.h"

namespace qpool::auth {

struct ApiKeys {
  std::string full;       // empty: none
  std::string read_only;  // empty: reads use `full`
  // The key for a call: the read-only one for a read when there is one, else the full one.
  std::string_view For(bool read) const {
    return read && !read_only.empty() ? std::string_view(read_only) : std::string_view(full);
  }
};

// Whether the api-key header in an app's request is replaced (override) or kept (if_absent).
enum class KeyMode : uint8_t { kIfAbsent, kOverride };

class ApiKeyStore {
 public:
  // Reads the configured keys. Also honours the deprecated health.api_key_env (probes only) when
  // no upstream key is set. Errors name the file or variable, never the value.
  static absl::StatusOr<std::unique_ptr<ApiKeyStore>> Create(const config::Config& config);

  // The keys now. Any thread.
  std::shared_ptr<const ApiKeys> Current() const ABSL_LOCKS_EXCLUDED(mu_);
  // Bumped on every change; a cache compares it with one relaxed load per call.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // Re-reads key files that changed. Returns true when the keys changed.
  bool Reload() ABSL_LOCKS_EXCLUDED(mu_);

  KeyMode mode() const { return mode_; }
  // Whether qpoold adds a key to the apps' calls (an upstream key is configured); the deprecated
  // health.api_key_env alone only serves the probes.
  bool applies_to_calls() const { return applies_to_calls_; }

 private:
  struct Source {
    std::string file;  // re-read when it changes
    std::string env;   // read once
    FileFingerprint print;
    std::string what() const;  // "upstream.api_key_file /path" for messages
  };
  ApiKeyStore() = default;
  // Reads `source` into `key`; false (logged) when it cannot.
  static absl::Status ReadInto(Source& source, std::string& key);

  KeyMode mode_ = KeyMode::kIfAbsent;
  bool applies_to_calls_ = false;
  Source full_source_;
  Source read_only_source_;
  std::atomic<uint64_t> generation_{1};
  mutable absl::Mutex mu_;
  std::shared_ptr<const ApiKeys> keys_ ABSL_GUARDED_BY(mu_);
};

// A worker's view of the store: the snapshot it holds, refreshed when the generation moves.
class ApiKeyCache {
 public:
  explicit ApiKeyCache(const ApiKeyStore& store) : store_(store) {}
  const ApiKeys& Get() {
    const uint64_t now = store_.generation();
    if (now != generation_) {
      keys_ = store_.Current();
      generation_ = now;
    }
    return *keys_;
  }
  // The same snapshot, to keep: a call holds the keys it started with for all of its attempts.
  const std::shared_ptr<const ApiKeys>& Snapshot() {
    Get();
    return keys_;
  }

 private:
  const ApiKeyStore& store_;
  uint64_t generation_ = 0;
  std::shared_ptr<const ApiKeys> keys_;
};

}  // namespace qpool::auth

#endif  // QPOOL_DAEMON_AUTH_API_KEYS_H_
