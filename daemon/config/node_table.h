// The node set as the I/O workers see it: node slots, each a node's index in the workers' pools,
// their metrics and the health verdicts. Built by the Proxy (from upstream.nodes, a config reload
// or DNS discovery) and handed to every worker as an immutable snapshot (Worker::Reconfigure).
//
// Thread-safety: immutable once published; share it as std::shared_ptr<const NodeTable>.
#ifndef QPOOL_DAEMON_CONFIG_NODE_TABLE_H_
#define QPOOL_DAEMON_CONFIG_NODE_TABLE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/config/config.h"

namespace qpool::tls {
class ContextStore;
}  // namespace qpool::tls

namespace qpool::config {

// One node slot: the index the workers, their metrics and the health verdicts know a node by.
// A node keeps its slot while it is in the node set; a removed node's slot stays taken until
// its pools drained in every worker, then a later node may take it (with a new generation).
struct NodeSlot {
  bool active = false;       // in the node set: new calls may be routed to it
  uint64_t generation = 0;   // changes when the slot is given to another node
  config::NodeAddress grpc;  // empty host: no gRPC endpoint (REST-only)
  config::NodeAddress rest;  // empty host: no REST endpoint (rest.listen off)
  std::string name;          // "host:port" of grpc (or rest): logs, metrics, /pool
  // Its TLS contexts: the gRPC endpoint's store (ALPN h2) and the REST endpoint's (ALPN
  // http/1.1), and the node's index in both (its upstream.nodes entry, or REST-only its
  // upstream.rest_nodes entry); a null store: that endpoint in cleartext.
  std::shared_ptr<const tls::ContextStore> tls;
  std::shared_ptr<const tls::ContextStore> rest_tls;
  size_t tls_index = 0;
};

// The node set; an immutable snapshot, replaced whole.
struct NodeTable {
  std::vector<NodeSlot> slots;  // by slot; inactive slots are draining or free
};

}  // namespace qpool::config

#endif  // QPOOL_DAEMON_CONFIG_NODE_TABLE_H_
