#include "daemon/auth/api_keys.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "daemon/common/status.h"
#include "spdlog/spdlog.h"

namespace qpool::auth {
namespace {

// A key as Qdrant compares it: the file's text without its trailing newline (echo and most
// editors add one) and surrounding blanks. A key is a header value: printable ASCII only.
absl::StatusOr<std::string> CleanKey(std::string text, const std::string& what) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' ||
                           text.back() == '\t')) {
    text.pop_back();
  }
  size_t start = 0;
  while (start < text.size() && (text[start] == ' ' || text[start] == '\t')) ++start;
  text.erase(0, start);
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  for (char c : text) {
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " holds a character that cannot go in a header (one key, printable ASCII)"));
    }
  }
  return text;
}

}  // namespace

std::string ApiKeyStore::Source::what() const {
  if (!file.empty()) return absl::StrCat("API key file ", file);
  return absl::StrCat("API key variable ", env);
}

absl::Status ApiKeyStore::ReadInto(Source& source, std::string& key) {
  if (!source.file.empty()) {
    source.print = FileFingerprint::Of(source.file);
    absl::StatusOr<std::string> text = ReadSmallFile(source.file, 64 << 10);
    if (!text.ok()) return text.status();  // names the file and the errno, never content
    QPOOL_ASSIGN_OR_RETURN(key, CleanKey(*std::move(text), source.what()));
    return absl::OkStatus();
  }
  if (!source.env.empty()) {
    const char* value = std::getenv(source.env.c_str());
    if (value == nullptr) {
      return absl::NotFoundError(absl::StrCat(source.what(), " is not set"));
    }
    QPOOL_ASSIGN_OR_RETURN(key, CleanKey(value, source.what()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ApiKeyStore>> ApiKeyStore::Create(const config::Config& config) {
  std::unique_ptr<ApiKeyStore> store(new ApiKeyStore());
  const config::UpstreamConfig& upstream = config.upstream;
  store->mode_ = upstream.api_key_mode == "override" ? KeyMode::kOverride : KeyMode::kIfAbsent;
  store->full_source_.file = upstream.api_key_file;
  store->full_source_.env = upstream.api_key_env;
  store->read_only_source_.file = upstream.read_only_api_key_file;
  store->read_only_source_.env = upstream.read_only_api_key_env;
  auto keys = std::make_shared<ApiKeys>();
  store->applies_to_calls_ = !upstream.api_key_file.empty() || !upstream.api_key_env.empty() ||
                             !upstream.read_only_api_key_file.empty() ||
                             !upstream.read_only_api_key_env.empty();
  QPOOL_RETURN_IF_ERROR(ReadInto(store->full_source_, keys->full));
  QPOOL_RETURN_IF_ERROR(ReadInto(store->read_only_source_, keys->read_only));
  if (!store->applies_to_calls_ && !config.health.api_key_env.empty()) {
    // Deprecated: the probes' key alone. An unset variable is a warning, as before.
    const char* value = std::getenv(config.health.api_key_env.c_str());
    if (value == nullptr) {
      SPDLOG_WARN(
          "health.api_key_env names {}, which is not set: health probes go without an API key",
          config.health.api_key_env);
    } else if (absl::StatusOr<std::string> key =
                   CleanKey(value, absl::StrCat("variable ", config.health.api_key_env));
               key.ok()) {
      keys->full = *std::move(key);
    } else {
      SPDLOG_WARN("health.api_key_env: {}; health probes go without an API key",
                  std::string(key.status().message()));
    }
    SPDLOG_WARN(
        "health.api_key_env is deprecated: set upstream.api_key_env (or upstream.api_key_file), "
        "which also gives the key to calls that come without one");
  }
  {
    // Not shared yet, but the lock keeps keys_'s ABSL_GUARDED_BY contract checkable.
    absl::MutexLock lock(&store->mu_);
    store->keys_ = std::move(keys);
  }
  return store;
}

std::shared_ptr<const ApiKeys> ApiKeyStore::Current() const {
  absl::MutexLock lock(&mu_);
  return keys_;
}

bool ApiKeyStore::Reload() {
  std::shared_ptr<const ApiKeys> now = Current();
  ApiKeys next = *now;
  bool changed = false;
  for (auto [source, key, label] :
       {std::tuple<Source*, std::string*, const char*>{&full_source_, &next.full, "API key"},
        {&read_only_source_, &next.read_only, "read-only API key"}}) {
    if (source->file.empty()) continue;
    if (FileFingerprint::Of(source->file) == source->print) continue;
    std::string fresh;
    if (absl::Status status = ReadInto(*source, fresh); !status.ok()) {
      SPDLOG_ERROR("{} changed but cannot be used, keeping the previous key: {}", source->what(),
                   std::string(status.message()));
      continue;
    }
    if (fresh == *key) continue;  // touched, same key
    *key = std::move(fresh);
    changed = true;
    SPDLOG_INFO("{} changed: the new {} goes on calls from now on", source->what(), label);
  }
  if (!changed) return false;
  {
    absl::MutexLock lock(&mu_);
    keys_ = std::make_shared<const ApiKeys>(std::move(next));
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

}  // namespace qpool::auth
