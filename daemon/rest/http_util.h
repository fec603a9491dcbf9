// HTTP/1.1 helpers of the REST front door: Qdrant's error document, hop-by-hop header removal
// (RFC 9110, section 7.6.1) and the request deadline a REST call gets.
//
//   std::string body = ErrorBody("no upstream connection within upstream.acquire_timeout (1s)");
//   // {"status":{"error":"no upstream connection ..."},"time":0.0}
//   StripHopByHop(request.base());  // Connection and what it names, Keep-Alive, TE, ...
//   SerializeHead(request.base(), head);  // "POST /collections/c/points/search HTTP/1.1\r\n..."
//
// Thread-safety: pure functions.
#ifndef QPOOL_DAEMON_REST_HTTP_UTIL_H_
#define QPOOL_DAEMON_REST_HTTP_UTIL_H_

#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/serializer.hpp>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/common/event_loop.h"

namespace qpool::rest {

// Qdrant's REST error shape, `message` JSON-escaped: {"status":{"error":"..."},"time":0.0}.
std::string ErrorBody(std::string_view message);

// Removes the hop-by-hop fields: Connection and every field it names, Keep-Alive, TE,
// Transfer-Encoding, Upgrade, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization. The
// caller sets the framing (Content-Length or chunked) and keep-alive of the next hop itself.
void StripHopByHop(boost::beast::http::fields& fields);

// The head of a request or an answer as it goes on the wire, written by Beast's serializer (start
// line, the fields, the empty line), into `out` (cleared first; its capacity is reused). For a
// message whose body the caller sends as it is (framed by the Content-Length among the fields, or
// by no body): one head buffer next to the body instead of a serializer driving the body. The
// message's body is not read. `host`, when not empty, is the Host field written right after the
// request line; the request's own Host field is removed (a retry or a hedge writes the same
// request with another node's Host without copying it).
template <bool kIsRequest, class Body>
void AppendHead(boost::beast::http::message<kIsRequest, Body>& message, std::string& out) {
  boost::beast::http::serializer<kIsRequest, Body> serializer(message);
  serializer.split(true);
  boost::beast::error_code ec;
  while (!ec && !serializer.is_header_done()) {
    serializer.next(ec, [&](boost::beast::error_code&, const auto& buffers) {
      for (auto buffer : boost::beast::buffers_range_ref(buffers)) {
        out.append(static_cast<const char*>(buffer.data()), buffer.size());
      }
      serializer.consume(boost::beast::buffer_bytes(buffers));
    });
  }
}
template <class Body>
void SerializeHead(boost::beast::http::request<Body>& request, std::string& out,
                   std::string_view host = {}) {
  out.clear();
  if (!host.empty()) request.erase(boost::beast::http::field::host);
  AppendHead(request, out);
  if (host.empty()) return;
  constexpr std::string_view kName = "Host: ";
  const size_t at = out.find("\r\n") + 2;  // after the request line
  out.insert(at, kName.size() + host.size() + 2, ' ');
  char* field = out.data() + at;
  std::memcpy(field, kName.data(), kName.size());
  std::memcpy(field + kName.size(), host.data(), host.size());
  std::memcpy(field + kName.size() + host.size(), "\r\n", 2);
}
template <class Body>
void SerializeHead(boost::beast::http::response<Body>& response, std::string& out) {
  out.clear();
  AppendHead(response, out);
}

// The `timeout` query parameter (whole seconds, as Qdrant reads it) of a request target
// ("/collections/c/points/search?timeout=30" -> 30s); nullopt when absent or not a number.
std::optional<Duration> QueryTimeout(std::string_view target);

// The path of a request target, without the query string.
std::string_view PathOf(std::string_view target);

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_HTTP_UTIL_H_
