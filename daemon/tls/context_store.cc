#include "daemon/tls/context_store.h"

#include <optional>

#include "spdlog/spdlog.h"

namespace qpool::tls {
namespace {

std::vector<std::string> FilesOf(const config::TlsOptions& options) {
  std::vector<std::string> files;
  for (const std::string* file : {&options.ca_file, &options.cert_file, &options.key_file}) {
    if (!file->empty()) files.push_back(*file);
  }
  return files;
}

std::vector<FileFingerprint> PrintsOf(const std::vector<std::string>& files) {
  std::vector<FileFingerprint> prints;
  prints.reserve(files.size());
  for (const std::string& file : files) prints.push_back(FileFingerprint::Of(file));
  return prints;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ContextStore>> ContextStore::Create(
    const config::UpstreamConfig& upstream, std::string alpn) {
  return Create(upstream, std::move(alpn), upstream.nodes);
}

absl::StatusOr<std::unique_ptr<ContextStore>> ContextStore::Create(
    const config::UpstreamConfig& upstream, std::string alpn,
    const std::vector<config::NodeAddress>& endpoints) {
  std::unique_ptr<ContextStore> store(new ContextStore());
  store->alpn_ = std::move(alpn);
  absl::MutexLock lock(&store->mu_);
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const config::NodeAddress& address = endpoints[i];
    Node node;
    node.name = address.ToString();
    node.host = address.host;
    // The settings of the node this endpoint belongs to (per-node overrides are keyed by the
    // node as written in upstream.nodes).
    node.options =
        upstream.tls.For(i < upstream.nodes.size() ? upstream.nodes[i].ToString() : node.name);
    if (node.options.enabled) {
      store->any_enabled_ = true;
      node.files = FilesOf(node.options);
      node.prints = PrintsOf(node.files);
      absl::StatusOr<std::shared_ptr<const ClientContext>> context =
          ClientContext::Create(node.options, node.host, store->alpn_);
      if (!context.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("upstream.tls for node ", node.name, ": ", context.status().message()));
      }
      node.context = *std::move(context);
      if (!node.options.verify) {
        SPDLOG_WARN(
            "upstream.tls.verify is false for node {}: its certificate is NOT checked, so anyone "
            "on the path can impersonate it and read the API key; counted in "
            "qpool_upstream_tls_unverified_connects_total",
            node.name);
      }
    }
    store->nodes_.push_back(std::move(node));
  }
  return store;
}

std::shared_ptr<const ClientContext> ContextStore::Get(size_t node) const {
  absl::MutexLock lock(&mu_);
  if (node >= nodes_.size()) return nullptr;
  return nodes_[node].context;
}

bool ContextStore::SameSettings(size_t node, const ContextStore& other, size_t other_node) const {
  if (&other == this) return node == other_node;
  // Not both locks at once: nothing needs the two stores consistent with each other.
  std::optional<Node> theirs;
  {
    absl::MutexLock lock(&other.mu_);
    if (other_node >= other.nodes_.size()) return false;
    const Node& n = other.nodes_[other_node];
    theirs.emplace();
    theirs->host = n.host;
    theirs->options = n.options;
    theirs->prints = n.prints;
  }
  absl::MutexLock lock(&mu_);
  if (node >= nodes_.size()) return false;
  const Node& mine = nodes_[node];
  const config::TlsOptions& a = mine.options;
  const config::TlsOptions& b = theirs->options;
  if (!a.enabled || !b.enabled) return a.enabled == b.enabled;
  return mine.host == theirs->host && a.ca_file == b.ca_file && a.server_name == b.server_name &&
         a.verify == b.verify && a.cert_file == b.cert_file && a.key_file == b.key_file &&
         mine.prints == theirs->prints;
}

int ContextStore::Reload(std::vector<size_t>* replaced_nodes) {
  if (!any_enabled_) return 0;
  // Stat and build without the lock (a connect may want Get() meanwhile); only this thread
  // writes nodes_, so reading its options and prints unlocked is safe.
  std::vector<std::pair<size_t, std::shared_ptr<const ClientContext>>> replaced;
  std::vector<std::pair<size_t, std::vector<FileFingerprint>>> seen;
  {
    std::vector<Node> snapshot;
    {
      absl::MutexLock lock(&mu_);
      for (const Node& node : nodes_) {
        Node copy;
        copy.name = node.name;
        copy.host = node.host;
        copy.options = node.options;
        copy.files = node.files;
        copy.prints = node.prints;
        snapshot.push_back(std::move(copy));
      }
    }
    for (size_t i = 0; i < snapshot.size(); ++i) {
      const Node& node = snapshot[i];
      if (!node.options.enabled) continue;
      std::vector<FileFingerprint> now = PrintsOf(node.files);
      if (now == node.prints) continue;
      seen.emplace_back(i, now);
      absl::StatusOr<std::shared_ptr<const ClientContext>> context =
          ClientContext::Create(node.options, node.host, alpn_);
      if (!context.ok()) {
        SPDLOG_ERROR(
            "upstream {}: TLS files changed but do not load, keeping the previous ones: {}",
            node.name, std::string(context.status().message()));
        continue;
      }
      SPDLOG_INFO(
          "upstream {}: TLS files changed; new connections use them, open ones are recycled",
          node.name);
      replaced.emplace_back(i, *std::move(context));
    }
  }
  absl::MutexLock lock(&mu_);
  for (auto& [i, prints] : seen) nodes_[i].prints = std::move(prints);
  for (auto& [i, context] : replaced) {
    nodes_[i].context = std::move(context);
    if (replaced_nodes != nullptr) replaced_nodes->push_back(i);
  }
  return static_cast<int>(replaced.size());
}

std::vector<size_t> SlotsWithNewTlsSettings(const config::NodeTable& was,
                                            const config::NodeTable& now,
                                            const ContextStore* before, const ContextStore* after,
                                            bool rest) {
  std::vector<size_t> changed;
  if (before == nullptr || after == nullptr || before == after) return changed;
  for (size_t s = 0; s < now.slots.size() && s < was.slots.size(); ++s) {
    const config::NodeSlot& slot = now.slots[s];
    const config::NodeSlot& old = was.slots[s];
    if (!slot.active || !old.active || slot.generation != old.generation) continue;
    if ((rest ? slot.rest : slot.grpc).host.empty()) continue;  // no such endpoint
    if (after->SameSettings(slot.tls_index, *before, old.tls_index)) continue;
    SPDLOG_INFO(
        "upstream {}{}: TLS settings changed by the reload; new connections use them, open ones "
        "are recycled",
        rest ? "REST " : "", (rest ? slot.rest : slot.grpc).ToString());
    changed.push_back(s);
  }
  return changed;
}

}  // namespace qpool::tls
