// HTTP/1.1 helpers of the REST front door: Qdrant's error document, hop-by-hop header removal
// (RFC 9110, section 7.6.1), the request deadline a REST call gets, and chunked trailers (RFC 9112,
// section 7.1.2): a parser that keeps them apart from the header, and the last chunk that carries
// them on.
//
//   std::string body = ErrorBody("no upstream connection within upstream.acquire_timeout (1s)");
//   // {"status":{"error":"no upstream connection ..."},"time":0.0}
//   StripHopByHop(request.base());  // Connection and what it names, Keep-Alive, TE, ...
//   SerializeHead(request.base(), head);  // "POST /collections/c/points/search HTTP/1.1\r\n..."
//   TrailerParser<true> parser;  ... parser.trailers()  // the fields after the last chunk
//   AppendLastChunk(parser.trailers(), out);  // "0\r\nChecksum: 1\r\n\r\n"
//
// Thread-safety: pure functions.
#ifndef QPOOL_DAEMON_REST_HTTP_UTIL_H_
#define QPOOL_DAEMON_REST_HTTP_UTIL_H_

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstddef>
#include <memory>
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
// Returns true when a TE field listed "trailers" (the sender takes trailer fields, RFC 9110
// section 10.1.4), which a proxy that forwards trailers may say again to the next hop.
bool StripHopByHop(boost::beast::http::fields& fields);

// Beast's parser for a message with a buffer_body, except that the trailer fields of a chunked
// body go to trailers() instead of into the message's own fields (where Beast's parser adds them
// once the header is long gone). Names and values as Beast parsed them: the name as sent, the
// value without its surrounding whitespace, an obs-fold joined; the same as the header's fields.
// Chunk extensions are not kept. Thread-safety: none (as Beast's parser).
template <bool kIsRequest>
class TrailerParser
    : public boost::beast::http::parser<kIsRequest, boost::beast::http::buffer_body> {
 public:
  TrailerParser() = default;
  // Whether the message had fields after its last chunk (known once it is done).
  bool has_trailers() const { return trailers_ != nullptr; }
  // Those fields. Only when has_trailers().
  const boost::beast::http::fields& trailers() const { return *trailers_; }

 private:
  void on_field_impl(boost::beast::http::field name, boost::beast::string_view name_string,
                     boost::beast::string_view value, boost::system::error_code&) override {
    if (this->is_header_done()) {
      if (trailers_ == nullptr) trailers_ = std::make_unique<boost::beast::http::fields>();
      trailers_->insert(name, name_string, value);
    } else {
      this->get().insert(name, name_string, value);
    }
  }

  // Made for the first trailer field: a message without any costs no fields object.
  std::unique_ptr<boost::beast::http::fields> trailers_;
};

// Appends a chunk's header without extensions, "<size in hex>\r\n", to `out` (size > 0).
void AppendChunkHeader(size_t size, std::string& out);
// Appends the last chunk of a chunked body to `out`: "0\r\n", each trailer field as
// "name: value\r\n" (what Beast's make_chunk_last writes for the same fields), and the empty line.
void AppendLastChunk(const boost::beast::http::fields& trailers, std::string& out);

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
