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

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
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

// The head of a request or an answer as it goes on the wire, byte for byte what Beast's serializer
// writes (start line, each field as "name: value\r\n", the empty line), into `out` (cleared
// first; its capacity is reused). For a message whose body the caller sends as it is (framed by
// the Content-Length among the fields, or by no body): one buffer instead of Beast's serializer.
// `host`, when not empty, is the Host field written (right after the request line) in place of the
// request's own.
void SerializeHead(const boost::beast::http::request_header<>& request, std::string& out,
                   std::string_view host = {});
void SerializeHead(const boost::beast::http::response_header<>& response, std::string& out);

// The `timeout` query parameter (whole seconds, as Qdrant reads it) of a request target
// ("/collections/c/points/search?timeout=30" -> 30s); nullopt when absent or not a number.
std::optional<Duration> QueryTimeout(std::string_view target);

// The path of a request target, without the query string.
std::string_view PathOf(std::string_view target);

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_HTTP_UTIL_H_
