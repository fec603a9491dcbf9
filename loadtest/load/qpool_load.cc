// qpool-load: a gRPC and REST load generator for Qdrant endpoints (qpoold, a proxy, or Qdrant
// itself), on nghttp2's client side (gRPC) or keep-alive HTTP/1.1 parsed by Beast (REST) and
// Boost.Asio, one event-loop thread. It is deliberately not built on the gRPC library, so that on
// a 2-core machine the load tool costs a few µs per call and leaves the CPU to what is measured.
//
//   qpool-load --target 127.0.0.1:6334 --connections 10 --inflight 10 --duration 5 --json out.json
//   qpool-load --target 127.0.0.1:6334 --method search --dim 768 --rate 2000 --duration 10
//   qpool-load --protocol rest --target 127.0.0.1:6333 --method search --connections 100
//
// REST (--protocol rest): Qdrant's HTTP API (health: GET /; search: POST
// /collections/C/points/search; upsert: PUT /collections/C/points?wait=true; the setup deletes and
// creates the collection the same way), JSON bodies built once; --inflight above 1 pipelines
// requests on a connection (answers come in order). An answer counts as ok when its status is 2xx;
// others are counted as HTTP_<status>.
//
// Closed loop (default): each of --connections keeps --inflight calls outstanding; latency is
// measured from each call's send. Open loop (--rate R): calls are due at a fixed rate, spread
// round-robin over the connections, and latency is measured from the intended send time, so a
// stalled server shows up in the percentiles (no coordinated omission).
//
// Every gRPC answer's grpc-status is checked; non-OK answers are counted by code, as are answers
// with no grpc-status, reset streams and calls lost with their connection. Every run is bounded: by
// --duration or --count, and always by --max-time. Targets are IP literals; a non-loopback target
// needs --allow-non-loopback.
#include <nghttp2/nghttp2.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "daemon/common/grpc_code.h"
#include "histogram.h"
#include "qdrant/collections.pb.h"
#include "qdrant/points.pb.h"
#include "qdrant/qdrant.pb.h"

namespace qpool::load {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------------------------
// Options

enum class Method { kHealth, kSearch, kUpsert };
enum class Protocol { kGrpc, kRest };

struct Options {
  std::string target;  // HOST:PORT, an IP literal (required)
  Protocol protocol = Protocol::kGrpc;
  bool allow_non_loopback = false;  // refuse non-loopback targets unless set
  Method method = Method::kHealth;
  int connections = 1;            // active connections
  int inflight = 1;               // closed loop: calls outstanding per connection
  double rate = 0;                // open loop: calls per second over all connections (0 = closed)
  double warmup_s = 1.0;          // warm-up seconds (not in the results)
  double duration_s = 0;          // measured seconds (this or count)
  uint64_t count = 0;             // measured calls (this or duration)
  double max_time_s = 300;        // hard bound on the whole run, connects included
  double connect_timeout_s = 60;  // connects still pending then count as failed
  int max_connecting = 256;       // connects in flight at once (a listener's backlog is finite)
  int idle_connections = 0;       // extra connections opened and held idle during the run
  int dim = 0;                    // vector size (search default 768, upsert default 384)
  int batch = 64;                 // upsert: points per call
  int points = 256;               // search: points the setup inserts
  int limit = 10;                 // search: results per call
  std::string collection;         // default qpool_load_<method>_<dim>
  bool setup = true;              // create the collection (search, upsert) before the load
  uint64_t max_outstanding = 100000;  // open loop: calls due beyond this are dropped and counted
  std::string json_path;              // write JSON here ("-" = stdout, then the table to stderr)
  bool quiet = false;                 // no table
};

void Usage(std::ostream& out) {
  out << "usage: qpool-load --target IP:PORT [options]\n"
         "  --protocol grpc|rest            gRPC over HTTP/2, or Qdrant's REST API over\n"
         "                                  keep-alive HTTP/1.1 (default grpc)\n"
         "  --method health|search|upsert   call (default health)\n"
         "  --connections N                 active connections (default 1)\n"
         "  --inflight N                    closed loop: calls in flight per connection (1;\n"
         "                                  REST: pipelined)\n"
         "  --rate R                        open loop: R calls/s in total (default: closed loop)\n"
         "  --warmup S                      warm-up seconds, not measured (1)\n"
         "  --duration S | --count N        measured seconds, or measured calls (default 5 s)\n"
         "  --max-time S                    hard bound on the whole run (300)\n"
         "  --connect-timeout S             give up on connects still pending after S (60)\n"
         "  --max-connecting N              connects in flight at once (256)\n"
         "  --idle-connections N            extra connections held idle during the run (0)\n"
         "  --dim N                         vector size (search 768, upsert 384)\n"
         "  --batch N                       upsert: points per call (64)\n"
         "  --points N                      search: points inserted by the setup (256)\n"
         "  --limit N                       search: results per call (10)\n"
         "  --collection NAME               (qpool_load_<method>_<dim>)\n"
         "  --no-setup                      do not (re)create the collection\n"
         "  --max-outstanding N             open loop: bound on calls in flight (100000)\n"
         "  --json FILE                     write the results as JSON (- = stdout)\n"
         "  --quiet                         no table\n"
         "  --allow-non-loopback            permit a target outside 127.0.0.0/8 and ::1\n";
}

// The options that take a number: name, accepted range, and the field the value goes to.
struct NumericOption {
  const char* name;
  double min;
  double max;
  void (*set)(Options& o, double value);
};

// A NumericOption setter for field `Field` of Options (an int, uint64_t or double).
template <auto Field>
void SetField(Options& o, double value) {
  using T = std::remove_reference_t<decltype(o.*Field)>;
  o.*Field = static_cast<T>(value);
}

constexpr NumericOption kNumericOptions[] = {
    {"--connections", 1, 200000, &SetField<&Options::connections>},
    {"--inflight", 1, 100000, &SetField<&Options::inflight>},
    {"--rate", 0.001, 10e6, &SetField<&Options::rate>},
    {"--warmup", 0, 3600, &SetField<&Options::warmup_s>},
    {"--duration", 0.001, 86400, &SetField<&Options::duration_s>},
    {"--count", 1, 1e10, &SetField<&Options::count>},
    {"--max-time", 0.1, 86400, &SetField<&Options::max_time_s>},
    {"--connect-timeout", 0.1, 3600, &SetField<&Options::connect_timeout_s>},
    {"--max-connecting", 1, 100000, &SetField<&Options::max_connecting>},
    {"--idle-connections", 0, 1000000, &SetField<&Options::idle_connections>},
    {"--dim", 1, 65536, &SetField<&Options::dim>},
    {"--batch", 1, 100000, &SetField<&Options::batch>},
    {"--points", 1, 10000000, &SetField<&Options::points>},
    {"--limit", 1, 100000, &SetField<&Options::limit>},
    {"--max-outstanding", 1, 10e6, &SetField<&Options::max_outstanding>},
};

const NumericOption* FindNumericOption(const std::string& name) {
  for (const NumericOption& option : kNumericOptions) {
    if (name == option.name) return &option;
  }
  return nullptr;
}

bool ParseOptions(int argc, char** argv, Options& o, std::string& error) {
  auto need = [&](int& i) -> const char* {
    if (i + 1 >= argc) {
      error = std::string(argv[i]) + " needs a value";
      return nullptr;
    }
    return argv[++i];
  };
  auto num = [&](const char* s, double lo, double hi, const char* name, double& out) {
    char* end = nullptr;
    out = std::strtod(s, &end);
    if (!s[0] || *end || !(out >= lo && out <= hi)) {
      std::ostringstream m;
      m << name << ": '" << s << "' is not a number in [" << lo << ", " << hi << "]";
      error = m.str();
      return false;
    }
    return true;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = nullptr;
    double d = 0;
    if (a == "--help" || a == "-h") {
      Usage(std::cout);
      std::exit(0);
    } else if (a == "--allow-non-loopback") {
      o.allow_non_loopback = true;
    } else if (a == "--no-setup") {
      o.setup = false;
    } else if (a == "--quiet") {
      o.quiet = true;
    } else if (!(v = need(i))) {
      return false;
    } else if (a == "--target") {
      o.target = v;
    } else if (a == "--protocol") {
      const std::string p = v;
      if (p == "grpc")
        o.protocol = Protocol::kGrpc;
      else if (p == "rest")
        o.protocol = Protocol::kRest;
      else
        return error = "--protocol: grpc or rest, not '" + p + "'", false;
    } else if (a == "--method") {
      const std::string m = v;
      if (m == "health")
        o.method = Method::kHealth;
      else if (m == "search")
        o.method = Method::kSearch;
      else if (m == "upsert")
        o.method = Method::kUpsert;
      else
        return error = "--method: health, search or upsert, not '" + m + "'", false;
    } else if (const NumericOption* option = FindNumericOption(a)) {
      if (!num(v, option->min, option->max, option->name, d)) return false;
      option->set(o, d);
    } else if (a == "--collection") {
      o.collection = v;
    } else if (a == "--json") {
      o.json_path = v;
    } else {
      error = "unknown option " + a;
      return false;
    }
  }
  if (o.target.empty()) return error = "--target IP:PORT is required", false;
  if (o.duration_s > 0 && o.count > 0) return error = "give --duration or --count, not both", false;
  if (o.duration_s == 0 && o.count == 0) o.duration_s = 5;
  if (o.dim == 0) o.dim = o.method == Method::kSearch ? 768 : 384;
  if (o.collection.empty()) {
    o.collection = std::string("qpool_load_") +
                   (o.method == Method::kSearch ? "search_" : "upsert_") + std::to_string(o.dim);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Requests: pre-encoded gRPC messages (5-byte prefix + protobuf), built once.

struct Request {
  std::string path;           // /package.Service/Method (gRPC), or the REST target
  std::string body;           // length-prefixed message (gRPC), or the JSON document (REST)
  std::string verb;           // REST: GET, POST, PUT, DELETE
  std::string wire;           // REST: the whole HTTP/1.1 request, built once (RestWire)
  bool not_found_ok = false;  // REST setup: a 404 counts as done (deleting what is not there)
};

std::string Frame(const google::protobuf::MessageLite& m) {
  const std::string payload = m.SerializeAsString();
  std::string out(5, '\0');
  const uint32_t n = static_cast<uint32_t>(payload.size());
  out[1] = static_cast<char>(n >> 24);
  out[2] = static_cast<char>(n >> 16);
  out[3] = static_cast<char>(n >> 8);
  out[4] = static_cast<char>(n);
  return out + payload;
}

void FillVector(std::mt19937& rng, int dim, google::protobuf::RepeatedField<float>* out) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  out->Reserve(dim);
  for (int i = 0; i < dim; ++i) out->Add(u(rng));
}

Request UpsertRequest(const Options& o, std::mt19937& rng, uint64_t first_id, int n) {
  qdrant::UpsertPoints up;
  up.set_collection_name(o.collection);
  up.set_wait(true);
  for (int i = 0; i < n; ++i) {
    qdrant::PointStruct* p = up.add_points();
    p->mutable_id()->set_num(first_id + i);
    FillVector(rng, o.dim, p->mutable_vectors()->mutable_vector()->mutable_dense()->mutable_data());
  }
  return {"/qdrant.Points/Upsert", Frame(up)};
}

// Calls that prepare the collection, run one at a time before the load.
std::vector<Request> SetupRequests(const Options& o, std::mt19937& rng) {
  std::vector<Request> out;
  if (o.method == Method::kHealth || !o.setup) return out;
  qdrant::DeleteCollection del;
  del.set_collection_name(o.collection);
  out.push_back({"/qdrant.Collections/Delete", Frame(del)});
  qdrant::CreateCollection create;
  create.set_collection_name(o.collection);
  qdrant::VectorParams* params = create.mutable_vectors_config()->mutable_params();
  params->set_size(o.dim);
  params->set_distance(qdrant::Cosine);
  out.push_back({"/qdrant.Collections/Create", Frame(create)});
  if (o.method == Method::kSearch) {
    for (int first = 0; first < o.points; first += 100) {
      out.push_back(UpsertRequest(o, rng, first, std::min(100, o.points - first)));
    }
  }
  return out;
}

// A few distinct requests, rotated, so the server does not see one body over and over.
std::vector<Request> LoadRequests(const Options& o, std::mt19937& rng) {
  std::vector<Request> out;
  switch (o.method) {
    case Method::kHealth:
      out.push_back({"/qdrant.Qdrant/HealthCheck", Frame(qdrant::HealthCheckRequest())});
      break;
    case Method::kSearch:
      for (int i = 0; i < 16; ++i) {
        qdrant::SearchPoints s;
        s.set_collection_name(o.collection);
        FillVector(rng, o.dim, s.mutable_vector());
        s.set_limit(o.limit);
        out.push_back({"/qdrant.Points/Search", Frame(s)});
      }
      break;
    case Method::kUpsert:
      for (int i = 0; i < 16; ++i)
        out.push_back(UpsertRequest(o, rng, uint64_t(i) * o.batch, o.batch));
      break;
  }
  return out;
}

// REST requests: Qdrant's HTTP API with JSON bodies, written as the Python client writes them.

void AppendVectorJson(std::mt19937& rng, int dim, std::string& out) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  out += '[';
  char number[32];
  for (int i = 0; i < dim; ++i) {
    const int n = std::snprintf(number, sizeof number, "%s%.6f", i ? "," : "", u(rng));
    out.append(number, static_cast<size_t>(n));
  }
  out += ']';
}

Request RestUpsertRequest(const Options& o, std::mt19937& rng, uint64_t first_id, int n) {
  std::string body = "{\"points\":[";
  for (int i = 0; i < n; ++i) {
    body += i ? ",{\"id\":" : "{\"id\":";
    body += std::to_string(first_id + i);
    body += ",\"vector\":";
    AppendVectorJson(rng, o.dim, body);
    body += '}';
  }
  body += "]}";
  return {"/collections/" + o.collection + "/points?wait=true", body, "PUT"};
}

std::vector<Request> RestSetupRequests(const Options& o, std::mt19937& rng) {
  std::vector<Request> out;
  if (o.method == Method::kHealth || !o.setup) return out;
  Request del{"/collections/" + o.collection, "", "DELETE"};
  del.not_found_ok = true;
  out.push_back(del);
  out.push_back({"/collections/" + o.collection,
                 "{\"vectors\":{\"size\":" + std::to_string(o.dim) + ",\"distance\":\"Cosine\"}}",
                 "PUT"});
  if (o.method == Method::kSearch) {
    for (int first = 0; first < o.points; first += 100) {
      out.push_back(RestUpsertRequest(o, rng, first, std::min(100, o.points - first)));
    }
  }
  return out;
}

std::vector<Request> RestLoadRequests(const Options& o, std::mt19937& rng) {
  std::vector<Request> out;
  switch (o.method) {
    case Method::kHealth:
      out.push_back({"/", "", "GET"});
      break;
    case Method::kSearch:
      for (int i = 0; i < 16; ++i) {
        std::string body = "{\"vector\":";
        AppendVectorJson(rng, o.dim, body);
        body += ",\"limit\":" + std::to_string(o.limit) + "}";
        out.push_back({"/collections/" + o.collection + "/points/search", body, "POST"});
      }
      break;
    case Method::kUpsert:
      for (int i = 0; i < 16; ++i) {
        out.push_back(RestUpsertRequest(o, rng, uint64_t(i) * o.batch, o.batch));
      }
      break;
  }
  return out;
}

// The request as it goes on the wire: request line, Host, the JSON framing, the body.
void RestWire(Request& r, const std::string& authority) {
  r.wire = r.verb + " " + r.path + " HTTP/1.1\r\nHost: " + authority +
           "\r\nUser-Agent: qpool-load/0.1\r\nAccept: */*\r\n";
  if (!r.body.empty() || r.verb == "POST" || r.verb == "PUT") {
    r.wire += "Content-Type: application/json\r\nContent-Length: " + std::to_string(r.body.size()) +
              "\r\n";
  }
  r.wire += "\r\n" + r.body;
}

// ---------------------------------------------------------------------------------------------
// Results

struct PhaseStats {
  uint64_t sent = 0;                       // calls written to a connection
  uint64_t ok = 0;                         // answered grpc-status 0
  std::map<std::string, uint64_t> errors;  // everything else, by code or kind
  LatencyHistogram latency;                // ok and failed answers alike
  uint64_t errors_total() const {
    uint64_t n = 0;
    for (const auto& [k, v] : errors) n += v;
    return n;
  }
};

// ---------------------------------------------------------------------------------------------
// Connections and calls

class Runner;
class Connection;

enum class CallKind { kSetup, kWarmup, kMeasured };

struct Call {
  Connection* conn = nullptr;
  const Request* request = nullptr;
  size_t offset = 0;     // request body bytes handed to nghttp2
  int64_t start_ns = 0;  // send time (closed loop) or intended send time (open loop)
  int grpc_status = -1;
  int http_status = 0;
  CallKind kind = CallKind::kMeasured;
  Call* prev = nullptr;  // the connection's list of calls in flight
  Call* next = nullptr;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Runner& runner, asio::io_context& io, bool idle, bool rest)
      : runner_(runner), socket_(io), idle_(idle), rest_(rest) {}
  ~Connection() {
    if (session_) nghttp2_session_del(session_);
  }

  void Start(const tcp::endpoint& ep);
  // Submits a call; false when the connection is gone or nghttp2 refused it.
  bool Submit(Call* call, const std::string& authority);
  void Flush();

  bool alive() const { return alive_; }
  bool ready() const { return ready_; }
  bool idle() const { return idle_; }

 private:
  static nghttp2_session_callbacks* Callbacks();
  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*);
  static int OnStreamClose(nghttp2_session* s, int32_t stream_id, uint32_t error_code, void* user);
  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void*);

  void WaitRead();
  void OnReadable();
  // REST: parses what `in_` holds into answers, in order; false once the connection failed.
  bool ParseRest();
  void FlushRest();
  // Writes out_ (not empty); Flush() again once it is written.
  void WriteOut();
  void Fail(const std::string& why);
  void Link(Call* c);
  void Unlink(Call* c);

  Runner& runner_;
  tcp::socket socket_;
  const bool idle_;
  const bool rest_;  // HTTP/1.1 (REST) instead of HTTP/2 (gRPC)
  nghttp2_session* session_ = nullptr;
  // REST: requests not yet written, calls in answer order, what was read and not parsed, and the
  // answer being parsed (its body is discarded into body_sink_).
  std::string rest_pending_;
  std::deque<Call*> rest_order_;
  boost::beast::flat_buffer in_;
  std::optional<boost::beast::http::response_parser<boost::beast::http::buffer_body>> parser_;
  std::array<char, 16 * 1024> body_sink_;
  bool alive_ = false;
  bool ready_ = false;  // peer SETTINGS received
  bool writing_ = false;
  std::vector<uint8_t> out_;
  Call* calls_ = nullptr;  // head of the calls in flight
};

class Runner {
 public:
  Runner(const Options& o, asio::io_context& io)
      : o_(o), io_(io), hard_stop_(io), tick_(io), connect_deadline_(io) {}

  int Run();

  // From connections.
  void OnConnected(Connection& c, bool ok, const std::string& why);
  void OnCallDone(Call* call, const char* failure);
  void OnConnectionLost(Connection& c, const std::string& why) {
    (c.idle() ? idle_lost_ : active_lost_)++;
    lost_reasons_[why]++;
  }
  std::array<uint8_t, 64 * 1024>& read_buffer() { return read_buffer_; }

 private:
  void StartConnects();
  void EndConnectPhase();
  void BeginSetup();
  void IssueSetup();
  void BeginLoad();
  bool IssueLoad(Connection* conn, int64_t intended_ns);
  void OpenLoopTick();
  void MaybeFinish();
  void Finish(bool timed_out);
  Call* NewCall();
  void FreeCall(Call* c);
  void Report();

  const Options& o_;
  asio::io_context& io_;
  asio::steady_timer hard_stop_;
  asio::steady_timer tick_;
  asio::steady_timer connect_deadline_;
  tcp::endpoint endpoint_;
  std::string authority_;
  std::array<uint8_t, 64 * 1024> read_buffer_;
  std::vector<std::shared_ptr<Connection>> active_;
  std::vector<std::shared_ptr<Connection>> idle_;
  int connects_pending_ = 0;  // started or not yet started, not yet ready or failed
  size_t next_to_start_ = 0;  // index over active_ then idle_
  int connecting_ = 0;        // started, not yet ready or failed
  bool connect_phase_over_ = false;
  int active_ready_ = 0;
  int idle_ready_ = 0;
  std::map<std::string, uint64_t> connect_errors_;
  int idle_lost_ = 0;  // idle connections closed after their SETTINGS exchange
  int active_lost_ = 0;
  std::map<std::string, uint64_t> lost_reasons_;

  std::vector<Request> setup_requests_;
  size_t setup_next_ = 0;
  std::map<std::string, uint64_t> setup_calls_;  // path -> calls sent
  std::vector<Request> requests_;
  size_t next_request_ = 0;

  bool loading_ = false;
  bool stop_issuing_ = false;
  bool finished_ = false;
  bool timed_out_ = false;
  std::string fatal_;
  int64_t load_start_ns_ = 0;
  int64_t measure_start_ns_ = 0;
  int64_t measure_end_ns_ = 0;  // duration mode: no measured call starts after this
  int64_t last_measured_done_ns_ = 0;
  uint64_t outstanding_ = 0;  // load calls in flight
  uint64_t dropped_ = 0;      // open loop: due but over --max-outstanding
  uint64_t open_loop_index_ = 0;
  size_t next_conn_ = 0;
  PhaseStats warmup_;
  PhaseStats measured_;
  std::vector<std::unique_ptr<Call>> call_storage_;
  std::vector<Call*> free_calls_;
};

// --- Connection ---

nghttp2_session_callbacks* Connection::Callbacks() {
  static nghttp2_session_callbacks* cbs = [] {
    nghttp2_session_callbacks* c = nullptr;
    nghttp2_session_callbacks_new(&c);
    nghttp2_session_callbacks_set_on_frame_recv_callback(c, OnFrameRecv);
    nghttp2_session_callbacks_set_on_header_callback(c, OnHeader);
    nghttp2_session_callbacks_set_on_stream_close_callback(c, OnStreamClose);
    return c;
  }();
  return cbs;
}

void Connection::Start(const tcp::endpoint& ep) {
  socket_.async_connect(ep, [self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec) {
      self->runner_.OnConnected(*self, false, ec.message());
      return;
    }
    boost::system::error_code ignored;
    self->socket_.set_option(tcp::no_delay(true), ignored);
    self->socket_.non_blocking(true, ignored);
    if (self->rest_) {  // HTTP/1.1: ready once connected
      self->alive_ = true;
      self->ready_ = true;
      self->runner_.OnConnected(*self, true, "");
      if (self->alive_) self->WaitRead();
      return;
    }
    nghttp2_session_client_new(&self->session_, Callbacks(), self.get());
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(self->session_, NGHTTP2_FLAG_NONE, settings, 2);
    nghttp2_session_set_local_window_size(self->session_, NGHTTP2_FLAG_NONE, 0, 1 << 30);
    self->alive_ = true;
    self->Flush();
    self->WaitRead();
  });
}

void Connection::WaitRead() {
  socket_.async_wait(tcp::socket::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       if (!self->alive_) return;
                       if (ec) return self->Fail(ec.message());
                       self->OnReadable();
                     });
}

void Connection::OnReadable() {
  if (rest_) {
    for (;;) {
      boost::system::error_code ec;
      const size_t n = socket_.read_some(in_.prepare(64 * 1024), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) break;
      if (ec) return Fail(ec == asio::error::eof ? "closed by peer" : ec.message());
      in_.commit(n);
      if (!ParseRest()) return;
      if (n < 64 * 1024) break;
    }
    FlushRest();
    WaitRead();
    return;
  }
  auto& buf = runner_.read_buffer();
  for (;;) {
    boost::system::error_code ec;
    const size_t n = socket_.read_some(asio::buffer(buf), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec) return Fail(ec == asio::error::eof ? "closed by peer" : ec.message());
    const ssize_t used = nghttp2_session_mem_recv(session_, buf.data(), n);
    if (used < 0) return Fail(nghttp2_strerror(static_cast<int>(used)));
    if (!alive_) return;
    if (n < buf.size()) break;
  }
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
    return Fail("session ended (GOAWAY)");
  }
  Flush();
  WaitRead();
}

void Connection::Flush() {
  if (rest_) return FlushRest();
  if (!alive_ || writing_) return;
  out_.clear();
  while (out_.size() < 64 * 1024) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) return Fail(nghttp2_strerror(static_cast<int>(n)));
    if (n == 0) break;
    out_.insert(out_.end(), data, data + n);
  }
  if (out_.empty()) return;
  WriteOut();
}

bool Connection::ParseRest() {
  namespace http = boost::beast::http;
  while (in_.size() > 0) {
    if (!parser_) {
      parser_.emplace();
      parser_->body_limit(boost::none);
      parser_->eager(true);
    }
    auto& body = parser_->get().body();
    body.data = body_sink_.data();
    body.size = body_sink_.size();
    boost::system::error_code ec;
    const size_t used = parser_->put(in_.data(), ec);
    in_.consume(used);
    if (ec == http::error::need_buffer) continue;  // the sink was full: discard and go on
    if (ec == http::error::need_more) return true;
    if (ec) {
      Fail("bad HTTP/1.1 answer: " + ec.message());
      return false;
    }
    if (!parser_->is_done()) continue;
    const unsigned status = parser_->get().result_int();
    const bool keep_alive = parser_->get().keep_alive();
    parser_.reset();
    if (rest_order_.empty()) {
      Fail("an answer nobody asked for");
      return false;
    }
    Call* c = rest_order_.front();
    rest_order_.pop_front();
    Unlink(c);
    c->http_status = static_cast<int>(status);
    runner_.OnCallDone(c, nullptr);
    if (!keep_alive) {
      Fail("closed by peer (Connection: close)");
      return false;
    }
    if (!alive_) return false;
  }
  return true;
}

void Connection::FlushRest() {
  if (!alive_ || writing_ || rest_pending_.empty()) return;
  out_.assign(rest_pending_.begin(), rest_pending_.end());
  rest_pending_.clear();
  WriteOut();
}

void Connection::WriteOut() {
  writing_ = true;
  asio::async_write(socket_, asio::buffer(out_),
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                      self->writing_ = false;
                      if (!self->alive_) return;
                      if (ec) return self->Fail(ec.message());
                      self->Flush();
                    });
}

bool Connection::Submit(Call* call, const std::string& authority) {
  if (!alive_) return false;
  if (rest_) {
    call->conn = this;
    call->grpc_status = -1;
    call->http_status = 0;
    rest_pending_ += call->request->wire;
    rest_order_.push_back(call);
    Link(call);
    return true;
  }
  auto nv = [](const char* name, const std::string& value) {
    return nghttp2_nv{(uint8_t*)name, (uint8_t*)value.data(), std::strlen(name), value.size(),
                      NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
  };
  static const std::string kPost = "POST", kHttp = "http", kGrpc = "application/grpc",
                           kTrailers = "trailers", kAgent = "qpool-load/0.1";
  const nghttp2_nv headers[] = {
      nv(":method", kPost),        nv(":scheme", kHttp),
      nv(":authority", authority), nv(":path", call->request->path),
      nv("content-type", kGrpc),   nv("te", kTrailers),
      nv("user-agent", kAgent),
  };
  nghttp2_data_provider body;
  body.source.ptr = call;
  body.read_callback = ReadBody;
  call->conn = this;
  call->offset = 0;
  call->grpc_status = -1;
  call->http_status = 0;
  const int32_t id = nghttp2_submit_request(session_, nullptr, headers,
                                            sizeof(headers) / sizeof(headers[0]), &body, call);
  if (id < 0) return false;
  Link(call);
  return true;
}

ssize_t Connection::ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                             uint32_t* data_flags, nghttp2_data_source* source, void*) {
  Call* c = static_cast<Call*>(source->ptr);
  const std::string& body = c->request->body;
  const size_t n = std::min(length, body.size() - c->offset);
  std::memcpy(buf, body.data() + c->offset, n);
  c->offset += n;
  if (c->offset == body.size()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

int Connection::OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<Connection*>(user);
  if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
      !self->ready_) {
    self->ready_ = true;
    self->runner_.OnConnected(*self, true, "");
  }
  return 0;
}

int Connection::OnHeader(nghttp2_session* s, const nghttp2_frame* frame, const uint8_t* name,
                         size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto* c = static_cast<Call*>(nghttp2_session_get_stream_user_data(s, frame->hd.stream_id));
  if (!c) return 0;
  auto is = [&](const char* n) {
    return namelen == std::strlen(n) && !std::memcmp(name, n, namelen);
  };
  auto to_int = [&] {
    int v = 0;
    for (size_t i = 0; i < valuelen && i < 9; ++i) {
      if (value[i] < '0' || value[i] > '9') return -2;
      v = v * 10 + (value[i] - '0');
    }
    return valuelen ? v : -2;
  };
  if (is("grpc-status"))
    c->grpc_status = to_int();
  else if (is(":status"))
    c->http_status = to_int();
  return 0;
}

int Connection::OnStreamClose(nghttp2_session* s, int32_t stream_id, uint32_t error_code,
                              void* user) {
  auto* self = static_cast<Connection*>(user);
  auto* c = static_cast<Call*>(nghttp2_session_get_stream_user_data(s, stream_id));
  if (!c) return 0;
  self->Unlink(c);
  const char* failure = nullptr;
  static thread_local std::string reset;
  if (c->grpc_status < 0) {
    if (error_code != NGHTTP2_NO_ERROR) {
      reset = std::string("RST_STREAM(") + nghttp2_http2_strerror(error_code) + ")";
      failure = reset.c_str();
    } else if (c->http_status != 200) {
      failure = "HTTP_STATUS_NOT_200";
    } else {
      failure = "NO_GRPC_STATUS";
    }
  }
  self->runner_.OnCallDone(c, failure);
  return 0;
}

void Connection::Link(Call* c) {
  c->prev = nullptr;
  c->next = calls_;
  if (calls_) calls_->prev = c;
  calls_ = c;
}

void Connection::Unlink(Call* c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    calls_ = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
}

void Connection::Fail(const std::string& why) {
  if (!alive_) return;
  alive_ = false;
  boost::system::error_code ignored;
  socket_.close(ignored);
  if (!ready_)
    runner_.OnConnected(*this, false, why);
  else
    runner_.OnConnectionLost(*this, why);
  rest_order_.clear();
  while (calls_) {
    Call* c = calls_;
    Unlink(c);
    runner_.OnCallDone(c, "CONNECTION_LOST");
  }
}

// --- Runner ---

Call* Runner::NewCall() {
  if (free_calls_.empty()) {
    call_storage_.push_back(std::make_unique<Call>());
    return call_storage_.back().get();
  }
  Call* c = free_calls_.back();
  free_calls_.pop_back();
  return c;
}

void Runner::FreeCall(Call* c) { free_calls_.push_back(c); }

int Runner::Run() {
  // Target: an IP literal, loopback unless allowed otherwise.
  const size_t colon = o_.target.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "qpool-load: --target must be IP:PORT\n";
    return 2;
  }
  std::string host = o_.target.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host, ec);
  const int port = std::atoi(o_.target.c_str() + colon + 1);
  if (ec || port <= 0 || port > 65535) {
    std::cerr << "qpool-load: --target '" << o_.target << "' is not IP:PORT (IP literal)\n";
    return 2;
  }
  if (!addr.is_loopback() && !o_.allow_non_loopback) {
    std::cerr << "qpool-load: " << host
              << " is not a loopback address; pass --allow-non-loopback\n";
    return 2;
  }
  endpoint_ = tcp::endpoint(addr, static_cast<uint16_t>(port));
  authority_ = o_.target;

  // Each connection is a file descriptor: raise the soft limit to the hard one.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  const uint64_t fds_needed = uint64_t(o_.connections) + o_.idle_connections + 32;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < fds_needed) {
    std::cerr << "qpool-load: " << fds_needed << " file descriptors needed, limit is "
              << lim.rlim_cur << " (raise ulimit -n)\n";
    return 2;
  }

  std::mt19937 rng(12345);
  const bool rest = o_.protocol == Protocol::kRest;
  setup_requests_ = rest ? RestSetupRequests(o_, rng) : SetupRequests(o_, rng);
  requests_ = rest ? RestLoadRequests(o_, rng) : LoadRequests(o_, rng);
  if (rest) {
    for (Request& r : setup_requests_) RestWire(r, authority_);
    for (Request& r : requests_) RestWire(r, authority_);
  }

  hard_stop_.expires_after(std::chrono::milliseconds(static_cast<int64_t>(o_.max_time_s * 1000)));
  hard_stop_.async_wait([this](const boost::system::error_code& e) {
    if (!e) Finish(true);
  });

  connects_pending_ = o_.connections + o_.idle_connections;
  for (int i = 0; i < o_.connections; ++i) {
    active_.push_back(std::make_shared<Connection>(*this, io_, false, rest));
  }
  for (int i = 0; i < o_.idle_connections; ++i) {
    idle_.push_back(std::make_shared<Connection>(*this, io_, true, rest));
  }
  connect_deadline_.expires_after(
      std::chrono::milliseconds(static_cast<int64_t>(o_.connect_timeout_s * 1000)));
  connect_deadline_.async_wait([this](const boost::system::error_code& e) {
    if (e || connect_phase_over_ || finished_) return;
    if (connects_pending_ > 0) connect_errors_["connect timeout"] += connects_pending_;
    EndConnectPhase();
  });
  StartConnects();
  io_.run();
  Report();
  if (!fatal_.empty()) return 1;
  return 0;
}

// Connects in waves of at most --max-connecting, so a listener's accept queue is not overrun.
void Runner::StartConnects() {
  const size_t total = active_.size() + idle_.size();
  while (connecting_ < o_.max_connecting && next_to_start_ < total) {
    const size_t i = next_to_start_++;
    Connection& c = i < active_.size() ? *active_[i] : *idle_[i - active_.size()];
    ++connecting_;
    c.Start(endpoint_);
  }
}

void Runner::OnConnected(Connection& c, bool ok, const std::string& why) {
  if (finished_) return;
  if (connect_phase_over_) {
    if (ok) (c.idle() ? idle_ready_ : active_ready_)++;
    return;
  }
  --connects_pending_;
  --connecting_;
  if (ok) {
    (c.idle() ? idle_ready_ : active_ready_)++;
  } else {
    connect_errors_[why]++;
  }
  if (connects_pending_ > 0) {
    // From inside a callback of another session: start the next connects from the event loop.
    asio::post(io_, [this] { StartConnects(); });
    return;
  }
  EndConnectPhase();
}

void Runner::EndConnectPhase() {
  if (connect_phase_over_) return;
  connect_phase_over_ = true;
  connect_deadline_.cancel();
  if (active_ready_ == 0) {
    fatal_ = "no active connection could be set up (" +
             (connect_errors_.empty() ? std::string("?") : connect_errors_.begin()->first) + ")";
    Finish(false);
    return;
  }
  // Called from inside nghttp2 callbacks: start the calls from the event loop instead.
  asio::post(io_, [this] { BeginSetup(); });
}

void Runner::BeginSetup() {
  if (finished_) return;
  if (setup_requests_.empty()) return BeginLoad();
  IssueSetup();
}

void Runner::IssueSetup() {
  Connection* conn = nullptr;
  for (auto& c : active_) {
    if (c->alive() && c->ready()) {
      conn = c.get();
      break;
    }
  }
  if (!conn) {
    fatal_ = "setup: no live connection";
    return Finish(false);
  }
  Call* call = NewCall();
  call->kind = CallKind::kSetup;
  call->request = &setup_requests_[setup_next_++];
  call->start_ns = NowNs();
  setup_calls_[call->request->verb.empty() ? call->request->path.substr(1)
                                           : call->request->verb + " " + call->request->path]++;
  if (!conn->Submit(call, authority_)) {
    fatal_ = "setup: submit failed";
    return Finish(false);
  }
  conn->Flush();
}

void Runner::BeginLoad() {
  if (finished_) return;
  loading_ = true;
  load_start_ns_ = NowNs();
  measure_start_ns_ = load_start_ns_ + static_cast<int64_t>(o_.warmup_s * 1e9);
  measure_end_ns_ =
      o_.duration_s > 0 ? measure_start_ns_ + static_cast<int64_t>(o_.duration_s * 1e9) : INT64_MAX;
  if (o_.rate > 0) {
    OpenLoopTick();
    return;
  }
  for (auto& c : active_) {
    if (!c->alive()) continue;
    for (int i = 0; i < o_.inflight; ++i) {
      if (!IssueLoad(c.get(), NowNs())) break;
    }
    c->Flush();
  }
  MaybeFinish();
}

// Starts one load call intended at `intended_ns`; false once no more calls are to start.
bool Runner::IssueLoad(Connection* conn, int64_t intended_ns) {
  if (stop_issuing_ || finished_) return false;
  const bool warm = intended_ns < measure_start_ns_;
  if (!warm) {
    if (intended_ns >= measure_end_ns_ || (o_.count > 0 && measured_.sent >= o_.count)) {
      stop_issuing_ = true;
      return false;
    }
  }
  Call* call = NewCall();
  call->kind = warm ? CallKind::kWarmup : CallKind::kMeasured;
  call->request = &requests_[next_request_];
  next_request_ = (next_request_ + 1) % requests_.size();
  call->start_ns = intended_ns;
  if (!conn->Submit(call, authority_)) {
    FreeCall(call);
    return false;
  }
  (warm ? warmup_ : measured_).sent++;
  ++outstanding_;
  return true;
}

void Runner::OpenLoopTick() {
  if (finished_ || stop_issuing_) return MaybeFinish();
  const double period_ns = 1e9 / o_.rate;
  const int64_t now = NowNs();
  std::vector<Connection*> touched;
  for (;;) {
    const int64_t due = load_start_ns_ + static_cast<int64_t>(open_loop_index_ * period_ns);
    if (due > now) break;
    ++open_loop_index_;
    // The next live connection, round-robin.
    Connection* conn = nullptr;
    for (size_t tries = 0; tries < active_.size(); ++tries) {
      Connection* c = active_[next_conn_].get();
      next_conn_ = (next_conn_ + 1) % active_.size();
      if (c->alive()) {
        conn = c;
        break;
      }
    }
    if (!conn) {
      stop_issuing_ = true;
      break;
    }
    if (outstanding_ >= o_.max_outstanding) {
      const bool warm = due < measure_start_ns_;
      if (!warm && due >= measure_end_ns_) {
        stop_issuing_ = true;
        break;
      }
      (warm ? warmup_ : measured_).errors["CLIENT_OVERLOAD"]++;
      ++dropped_;
      continue;
    }
    if (!IssueLoad(conn, due)) break;
    touched.push_back(conn);
  }
  for (Connection* c : touched) c->Flush();
  if (stop_issuing_) return MaybeFinish();
  const int64_t next_due = load_start_ns_ + static_cast<int64_t>(open_loop_index_ * period_ns);
  tick_.expires_after(std::chrono::nanoseconds(std::max<int64_t>(0, next_due - NowNs())));
  tick_.async_wait([this](const boost::system::error_code& e) {
    if (!e) OpenLoopTick();
  });
}

void Runner::OnCallDone(Call* call, const char* failure) {
  const int64_t now = NowNs();
  Connection* conn = call->conn;
  const CallKind kind = call->kind;
  std::string code;
  if (failure) {
    code = failure;
  } else if (o_.protocol == Protocol::kRest) {
    const int status = call->http_status;
    const bool ok =
        (status >= 200 && status < 300) || (status == 404 && call->request->not_found_ok);
    if (!ok) code = "HTTP_" + std::to_string(status);
  } else if (call->grpc_status != 0) {
    const char* name = qpool::GrpcCodeName(call->grpc_status);
    code = name ? name : "GRPC_STATUS_" + std::to_string(call->grpc_status);
  }
  if (kind == CallKind::kSetup) {
    const std::string path = call->request->path;
    FreeCall(call);
    if (finished_) return;
    if (!code.empty()) {
      fatal_ = "setup call " + path + " failed: " + code;
      return Finish(false);
    }
    // From inside an nghttp2 callback: continue from the event loop.
    if (setup_next_ < setup_requests_.size()) {
      asio::post(io_, [this] { IssueSetup(); });
    } else {
      asio::post(io_, [this] { BeginLoad(); });
    }
    return;
  }
  PhaseStats& stats = kind == CallKind::kWarmup ? warmup_ : measured_;
  stats.latency.Record(static_cast<uint64_t>(std::max<int64_t>(0, now - call->start_ns)));
  if (code.empty())
    stats.ok++;
  else
    stats.errors[code]++;
  if (kind == CallKind::kMeasured) last_measured_done_ns_ = now;
  --outstanding_;
  FreeCall(call);
  if (finished_) return;
  if (o_.rate == 0 && conn->alive()) {
    IssueLoad(conn, now);  // the caller (a read or a Fail) flushes
  }
  MaybeFinish();
}

void Runner::MaybeFinish() {
  if (finished_ || !loading_) return;
  bool any_alive = false;
  for (auto& c : active_) any_alive |= c->alive();
  if (!any_alive) stop_issuing_ = true;
  if (stop_issuing_ && outstanding_ == 0) Finish(false);
}

void Runner::Finish(bool timed_out) {
  if (finished_) return;
  finished_ = true;
  timed_out_ = timed_out;
  io_.stop();
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) continue;
    out += ch;
  }
  return out;
}

void Runner::Report() {
  const int64_t end = last_measured_done_ns_ > 0 ? last_measured_done_ns_ : NowNs();
  const double measured_s =
      loading_ ? std::max(1e-9, (end - std::min(measure_start_ns_, end)) / 1e9) : 0;
  const uint64_t answered = measured_.latency.count();
  const double rps = measured_s > 0 ? answered / measured_s : 0;
  // Calls outstanding when the run ended (only after --max-time) are errors of their phase.
  uint64_t unfinished = outstanding_;
  if (unfinished) measured_.errors["UNFINISHED_AT_MAX_TIME"] += unfinished;
  const auto& h = measured_.latency;
  auto us = [](uint64_t ns) { return ns / 1000.0; };
  const char* method = o_.method == Method::kHealth   ? "health"
                       : o_.method == Method::kSearch ? "search"
                                                      : "upsert";

  std::ostringstream js;
  js.setf(std::ios::fixed);
  js.precision(3);
  js << "{\"tool\":\"qpool-load\",\"target\":\"" << JsonEscape(o_.target) << "\",\"protocol\":\""
     << (o_.protocol == Protocol::kRest ? "rest" : "grpc") << "\",\"method\":\"" << method
     << "\",\"path\":\"" << (requests_.empty() ? "" : JsonEscape(requests_[0].path))
     << "\",\"mode\":\"" << (o_.rate > 0 ? "open" : "closed")
     << "\",\"connections\":" << o_.connections << ",\"inflight\":" << o_.inflight
     << ",\"rate\":" << o_.rate << ",\"dim\":" << (o_.method == Method::kHealth ? 0 : o_.dim)
     << ",\"batch\":" << (o_.method == Method::kUpsert ? o_.batch : 0)
     << ",\"request_bytes\":" << (requests_.empty() ? 0 : requests_[0].body.size())
     << ",\"connections_ready\":" << active_ready_
     << ",\"idle_connections\":" << o_.idle_connections
     << ",\"idle_connections_ready\":" << idle_ready_ << ",\"connect_errors\":{";
  bool first = true;
  for (const auto& [k, v] : connect_errors_) {
    js << (first ? "" : ",") << "\"" << JsonEscape(k) << "\":" << v;
    first = false;
  }
  js << "},\"connections_lost\":" << active_lost_ << ",\"idle_connections_lost\":" << idle_lost_
     << ",\"lost_reasons\":{";
  first = true;
  for (const auto& [k, v] : lost_reasons_) {
    js << (first ? "" : ",") << "\"" << JsonEscape(k) << "\":" << v;
    first = false;
  }
  js << "},\"setup_calls\":{";
  first = true;
  for (const auto& [k, v] : setup_calls_) {
    js << (first ? "" : ",") << "\"" << JsonEscape(k) << "\":" << v;
    first = false;
  }
  auto phase = [&](const char* name, const PhaseStats& p) {
    js << "\"" << name << "\":{\"sent\":" << p.sent << ",\"ok\":" << p.ok
       << ",\"errors\":" << p.errors_total() << ",\"errors_by_code\":{";
    bool f = true;
    for (const auto& [k, v] : p.errors) {
      js << (f ? "" : ",") << "\"" << JsonEscape(k) << "\":" << v;
      f = false;
    }
    js << "}}";
  };
  js << "},";
  phase("warmup", warmup_);
  js << ",";
  phase("measured", measured_);
  js << ",\"calls_sent_total\":" << (warmup_.sent + measured_.sent)
     << ",\"duration_s\":" << measured_s << ",\"throughput_rps\":" << rps
     << ",\"errors\":" << measured_.errors_total() << ",\"dropped\":" << dropped_
     << ",\"timed_out\":" << (timed_out_ ? "true" : "false") << ",\"fatal\":\""
     << JsonEscape(fatal_) << "\",\"latency_us\":{\"count\":" << h.count()
     << ",\"mean\":" << us(static_cast<uint64_t>(h.mean())) << ",\"p50\":" << us(h.Percentile(50))
     << ",\"p90\":" << us(h.Percentile(90)) << ",\"p95\":" << us(h.Percentile(95))
     << ",\"p99\":" << us(h.Percentile(99)) << ",\"p99_9\":" << us(h.Percentile(99.9))
     << ",\"max\":" << us(h.max()) << "},\"histogram_us\":[";
  first = true;
  for (const auto& [upper, n] : h.Buckets()) {
    js << (first ? "" : ",") << "[" << us(upper) << "," << n << "]";
    first = false;
  }
  js << "]}\n";

  std::ostream& table = o_.json_path == "-" ? std::cerr : std::cout;
  if (!o_.quiet) {
    char line[256];
    table << "qpool-load " << (o_.protocol == Protocol::kRest ? "REST " : "") << method << " -> "
          << o_.target << "  "
          << (o_.rate > 0 ? "open loop " + std::to_string(o_.rate) + " calls/s"
                          : "closed loop " + std::to_string(o_.connections) + " conn x " +
                                std::to_string(o_.inflight) + " in flight")
          << "\n";
    if (!fatal_.empty()) table << "FATAL: " << fatal_ << "\n";
    if (o_.idle_connections) {
      table << "idle connections held: " << idle_ready_ << " of " << o_.idle_connections
            << ", lost during the run: " << idle_lost_ << "\n";
    }
    for (const auto& [k, v] : lost_reasons_)
      table << "  connection lost (" << k << "): " << v << "\n";
    std::snprintf(line, sizeof line, "%-10s %10s %10s %10s %12s\n", "phase", "sent", "ok", "errors",
                  "calls/s");
    table << line;
    std::snprintf(line, sizeof line, "%-10s %10llu %10llu %10llu %12s\n", "warm-up",
                  (unsigned long long)warmup_.sent, (unsigned long long)warmup_.ok,
                  (unsigned long long)warmup_.errors_total(), "-");
    table << line;
    std::snprintf(line, sizeof line, "%-10s %10llu %10llu %10llu %12.0f\n", "measured",
                  (unsigned long long)measured_.sent, (unsigned long long)measured_.ok,
                  (unsigned long long)measured_.errors_total(), rps);
    table << line;
    std::snprintf(line, sizeof line,
                  "latency us: mean %.1f  p50 %.1f  p90 %.1f  p95 %.1f  p99 %.1f  p99.9 %.1f  max "
                  "%.1f\n",
                  h.mean() / 1000.0, us(h.Percentile(50)), us(h.Percentile(90)),
                  us(h.Percentile(95)), us(h.Percentile(99)), us(h.Percentile(99.9)), us(h.max()));
    table << line;
    for (const auto& [k, v] : measured_.errors) table << "  error " << k << ": " << v << "\n";
    for (const auto& [k, v] : connect_errors_)
      table << "  connect error " << k << ": " << v << "\n";
    // Coarse histogram: powers of two in µs.
    std::map<int, uint64_t> coarse;
    for (const auto& [upper, n] : h.Buckets()) {
      int b = 0;
      while ((1ull << b) * 1000 < upper) ++b;
      coarse[b] += n;
    }
    for (const auto& [b, n] : coarse) {
      const int bar = h.count() ? static_cast<int>(50.0 * n / h.count() + 0.5) : 0;
      std::snprintf(line, sizeof line, "  <= %8llu us %10llu %s\n", 1ull << b,
                    (unsigned long long)n, std::string(bar, '#').c_str());
      table << line;
    }
  }
  const std::string json = js.str();
  if (o_.json_path == "-") {
    std::cout << json;
  } else if (!o_.json_path.empty()) {
    std::ofstream f(o_.json_path);
    f << json;
    if (!f) std::cerr << "qpool-load: cannot write " << o_.json_path << "\n";
  }
}

}  // namespace
}  // namespace qpool::load

int main(int argc, char** argv) {
  qpool::load::Options options;
  std::string error;
  if (!qpool::load::ParseOptions(argc, argv, options, error)) {
    std::cerr << "qpool-load: " << error << "\n";
    qpool::load::Usage(std::cerr);
    return 2;
  }
  boost::asio::io_context io(1);
  qpool::load::Runner runner(options, io);
  return runner.Run();
}
