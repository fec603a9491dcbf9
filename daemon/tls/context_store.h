// The TLS client contexts of every node, rebuilt when their certificate files change.
//
// Built at start from upstream.tls (a bad file there is a start-up error). Reload(), on the
// secrets thread every upstream.secrets_poll_interval, stats each node's files (CA, client
// certificate, key; resolved through symlinks, as a Kubernetes Secret mount swaps them) and
// rebuilds the contexts whose files changed. New connections use the new context; the caller
// recycles the open ones (Proxy: each worker's pools of the replaced nodes drain their connections
// gently, NodePool::RecycleAll). A new file that does not load keeps the old context and logs why,
// once per change.
//
// One store per protocol: the gRPC pools' (ALPN h2, upstream.nodes) and the REST pools' (ALPN
// http/1.1, each node's REST endpoint, with the settings of the gRPC node at the same position).
//
// Thread-safety: Get() from any thread (a mutex, once per connect); Reload() from one thread.
#ifndef QPOOL_DAEMON_TLS_CONTEXT_STORE_H_
#define QPOOL_DAEMON_TLS_CONTEXT_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/common/file_fingerprint.h"
#include "daemon/config/config.h"
#include "daemon/config/node_table.h"
#include "daemon/tls/client_tls.h"

namespace qpool::tls {

class ContextStore {
 public:
  // `alpn`: "h2" for the gRPC pools. Fails when a node's TLS files do not load.
  static absl::StatusOr<std::unique_ptr<ContextStore>> Create(
      const config::UpstreamConfig& upstream, std::string alpn);
  // The same for other endpoints of the same nodes: `endpoints[i]` is reached with the TLS settings
  // of upstream.nodes[i] (upstream.tls.For), verified against its own host by default. For the
  // REST pools: ALPN "http/1.1", endpoints rest::RestNodesOf(config).
  static absl::StatusOr<std::unique_ptr<ContextStore>> Create(
      const config::UpstreamConfig& upstream, std::string alpn,
      const std::vector<config::NodeAddress>& endpoints);

  // Node `node` (upstream.nodes order): its current context; null when it is reached in
  // cleartext.
  std::shared_ptr<const ClientContext> Get(size_t node) const ABSL_LOCKS_EXCLUDED(mu_);
  // Rebuilds the contexts whose files changed. Returns how many were replaced; their node indexes
  // go to `replaced` when given.
  int Reload(std::vector<size_t>* replaced = nullptr) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether some node is reached over TLS.
  bool any_enabled() const { return any_enabled_; }
  // Whether endpoint `node` of this store is reached as endpoint `other_node` of `other` is: both
  // in cleartext, or both over TLS with the same host, options (CA, server name, verify, client
  // certificate and key) and files as last read. False for an index either store does not have.
  // A reload that replaces a store recycles the open connections of each endpoint for which this
  // is false (Proxy::Reconfigure), as a file change does.
  bool SameSettings(size_t node, const ContextStore& other, size_t other_node) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Node {
    std::string name;  // "host:port"
    std::string host;
    config::TlsOptions options;
    std::vector<std::string> files;       // the files the context was built from
    std::vector<FileFingerprint> prints;  // as they were when last read (loaded or refused)
    std::shared_ptr<const ClientContext> context;
  };
  ContextStore() = default;

  std::string alpn_;
  bool any_enabled_ = false;
  mutable absl::Mutex mu_;
  std::vector<Node> nodes_ ABSL_GUARDED_BY(mu_);
};

// After a reload replaced the store `before` with `after` (the gRPC endpoints', or with `rest` the
// REST endpoints'; the same store or a null one: nothing changed), the slots of `now` that are
// the same node as in `was` (active in both, same generation) and whose endpoint `after` reaches
// differently from `before` (ContextStore::SameSettings: TLS turned on or off, another CA, server
// name, verify or client certificate, or files that changed). Each is logged. The caller recycles
// their open connections gently, as for a file change (WorkerPools::RecycleTlsNodes).
std::vector<size_t> SlotsWithNewTlsSettings(const config::NodeTable& was,
                                            const config::NodeTable& now,
                                            const ContextStore* before, const ContextStore* after,
                                            bool rest);

}  // namespace qpool::tls

#endif  // QPOOL_DAEMON_TLS_CONTEXT_STORE_H_
