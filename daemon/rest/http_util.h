// HTTP/1.1 helpers of the REST front door: Beast's parser recording a message's header flat
// (HeadParser into an HttpHead: HeaderFields, its bytes in a FieldText), hop-by-hop header removal
// (RFC 9110, section 7.6.1), the head as it goes on the wire, Qdrant's error document, the request
// deadline a REST call gets, and chunked trailers (RFC 9112, section 7.1.2) kept apart and passed
// on.
//
//   HttpHead head;  // the session's, reused
//   HeadParser<true> parser(head);  parser.put(buffer, ec);  ...  head.fields.Get(field::host)
//   StripHopByHop(head.fields);  // Connection and what it names, Keep-Alive, TE, ...
//   SerializeRequestHead(head, out);  // "POST /collections/c/points/search HTTP/1.1\r\n..."
//   AppendLastChunk(head.trailers, out);  // "0\r\nChecksum: 1\r\n\r\n"
//   std::string body = ErrorBody("no upstream connection within upstream.acquire_timeout (1s)");
//   // {"status":{"error":"no upstream connection ..."},"time":0.0}
//
// Thread-safety: the functions are pure; the classes say theirs.
#ifndef QPOOL_DAEMON_REST_HTTP_UTIL_H_
#define QPOOL_DAEMON_REST_HTTP_UTIL_H_

#include <algorithm>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/common/event_loop.h"

namespace qpool::rest {

// A std::string_view as Beast's own string_view (Boost's), for Beast's helpers (token_list,
// iequals, string_to_field).
inline boost::beast::string_view BeastView(std::string_view s) { return {s.data(), s.size()}; }

// Qdrant's REST error shape, `message` JSON-escaped: {"status":{"error":"..."},"time":0.0}.
std::string ErrorBody(std::string_view message);

// The bytes of a HeaderFields: one buffer, appended to, and cleared for the next message without
// giving its memory back (bounded by the header size limits); not zeroed. A copy gets the bytes in
// its own buffer (its capacity reused); a moved-from FieldText is empty and usable.
// Thread-safety: none.
class FieldText {
 public:
  FieldText() = default;
  FieldText(const FieldText& other) { *this = other; }
  FieldText& operator=(const FieldText& other);
  FieldText(FieldText&& other) noexcept { *this = std::move(other); }
  FieldText& operator=(FieldText&& other) noexcept;

  const char* data() const { return data_.get(); }
  size_t size() const { return size_; }
  void Clear() { size_ = 0; }
  // Room for `more` bytes at the end (the size grows by them); returns where they go. The text may
  // move: views into it are invalid afterwards.
  char* Grow(size_t more) {
    if (size_ + more > capacity_) Reallocate(size_ + more);
    char* at = data_.get() + size_;
    size_ += more;
    return at;
  }
  // `view` points into the text (to be copied before a Grow).
  bool Contains(std::string_view view) const {
    return !view.empty() && view.data() >= data_.get() && view.data() < data_.get() + size_;
  }

 private:
  void Reallocate(size_t needed);

  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// The fields of a message's header, or of its trailer section, as parsed: in order, each kept as
// its "name: value\r\n" run in one flat buffer that is reused from message to message (no
// allocation per field once it has grown, no ordered index: a message has a handful of fields,
// and a lookup is a scan). Names compare case-insensitively, as Beast's fields do. Erasing marks
// a field gone; Set erases every field of the name and appends one, as Beast's set does. The
// runs are kept in a FieldText. Thread-safety: none.
class HeaderFields {
 public:
  HeaderFields() = default;
  HeaderFields(const HeaderFields& other) = default;
  HeaderFields& operator=(const HeaderFields& other) = default;
  // A moved-from object is empty and usable.
  HeaderFields(HeaderFields&& other) noexcept { *this = std::move(other); }
  HeaderFields& operator=(HeaderFields&& other) noexcept;

  struct Field {
    boost::beast::http::field name;  // field::unknown for a name Beast has no enum for
    std::string_view name_string;    // as sent
    std::string_view value;          // without surrounding whitespace
  };

  void Clear();
  // Appends a field. The views are copied.
  void Add(boost::beast::http::field name, std::string_view name_string, std::string_view value);
  void Add(boost::beast::http::field name, std::string_view value);  // Beast's spelling of it
  void Add(std::string_view name_string, std::string_view value);
  // The fields not erased.
  size_t size() const { return live_; }
  bool empty() const { return live_ == 0; }
  // The first field of the name's value.
  std::optional<std::string_view> Get(boost::beast::http::field name) const;
  std::optional<std::string_view> Get(std::string_view name) const;
  size_t Count(boost::beast::http::field name) const;
  size_t Count(std::string_view name) const;
  // Erases every field of the name; returns how many.
  size_t Erase(boost::beast::http::field name);
  size_t Erase(std::string_view name);
  // Erases every field of the name and appends one with `value`.
  void Set(boost::beast::http::field name, std::string_view value);
  void Set(std::string_view name, std::string_view value);
  // Calls f(const Field&) for each field, in order.
  template <class F>
  void ForEach(F&& f) const {
    for (const Entry& e : entries_) {
      if (!e.erased) f(FieldOf(e));
    }
  }
  // Appends each field as "name: value\r\n" (skipping Host when `skip_host`), then the empty line.
  void AppendTo(std::string& out, bool skip_host = false) const;
  // What AppendTo appends: its size, and the bytes written at `out` (returns their end).
  size_t WireSize(bool skip_host = false) const;
  char* WriteTo(char* out, bool skip_host = false) const;

 private:
  struct Entry {
    boost::beast::http::field name;
    bool erased;
    uint32_t at;  // the run "name: value\r\n" in text_
    uint32_t name_size;
    uint32_t value_size;
  };
  friend bool StripHopByHop(HeaderFields& fields);

  Field FieldOf(const Entry& e) const {
    return {e.name, std::string_view(text_.data() + e.at, e.name_size),
            std::string_view(text_.data() + e.at + e.name_size + 2, e.value_size)};
  }
  bool Named(const Entry& e, std::string_view name) const;

  FieldText text_;  // the runs, back to back
  std::vector<Entry> entries_;
  size_t live_ = 0;
};

// A request's or an answer's header as HeadParser parsed it, with the edits a proxy makes before
// it passes the message on. The start line's strings keep their capacity from message to message.
// Thread-safety: none.
struct HttpHead {
  unsigned version = 11;  // 10, 11, or what the start line said (20 for "HTTP/2.0")
  // A request's.
  // unknown for a method Beast has no enum for: method_string has it.
  boost::beast::http::verb method = boost::beast::http::verb::unknown;
  std::string method_string;  // as sent
  std::string target;
  // An answer's.
  unsigned status = 0;
  std::string reason;  // as sent; may be empty
  HeaderFields fields;
  bool has_trailers = false;  // the chunked body ended with trailer fields
  HeaderFields trailers;      // those

  void Clear();
  // As Beast's message::keep_alive(): the first Connection field's tokens and the version.
  bool KeepAlive() const;
  // As Beast's message::keep_alive(bool): the first Connection field loses "close" and
  // "keep-alive" and gets what `keep_alive` needs for the version ("close" for 1.1, "keep-alive"
  // for 1.0); no field when that leaves no token.
  void SetKeepAlive(bool keep_alive);
  // As Beast's message::chunked(): the last token of the first Transfer-Encoding field is chunked.
  bool Chunked() const;
  // As Beast's chunked(true) on a message without Transfer-Encoding (StripHopByHop took it):
  // "Transfer-Encoding: chunked", no Content-Length.
  void SetChunked();
  // As Beast's content_length(n) on a message without Transfer-Encoding: one Content-Length.
  void SetContentLength(uint64_t length);
};

// Removes the hop-by-hop fields: Connection and every field it names, Keep-Alive, TE,
// Transfer-Encoding, Upgrade, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization. The
// caller sets the framing (Content-Length or chunked) and keep-alive of the next hop itself.
// Returns true when a TE field listed "trailers" (the sender takes trailer fields, RFC 9110
// section 10.1.4), which a proxy that forwards trailers may say again to the next hop.
bool StripHopByHop(HeaderFields& fields);

// Beast's HTTP/1.1 parser (basic_parser: every byte of the syntax is Beast's) with the header
// recorded into an HttpHead (the caller's, cleared here and reused across messages) instead of a
// Beast message: no allocation and no ordered-set insert per field. The body goes to body(), as
// into a buffer_body (point data/size at room; a full buffer stops the parser with need_buffer).
// The fields after a chunked body's last chunk go to head().trailers. Chunk extensions are not
// kept. One message per parser (as Beast's). Thread-safety: none.
template <bool kIsRequest>
class HeadParser : public boost::beast::http::basic_parser<kIsRequest> {
 public:
  explicit HeadParser(HttpHead& head) : head_(head) { head_.Clear(); }

  HttpHead& head() { return head_; }
  const HttpHead& head() const { return head_; }
  boost::beast::http::buffer_body::value_type& body() { return body_; }

 private:
  using error_code = boost::system::error_code;
  using string_view = boost::beast::string_view;

  void on_request_impl(boost::beast::http::verb method, string_view method_str, string_view target,
                       int version, error_code&) override {
    head_.method = method;
    head_.method_string.assign(method_str.data(), method_str.size());
    head_.target.assign(target.data(), target.size());
    head_.version = static_cast<unsigned>(version);
  }
  void on_response_impl(int code, string_view reason, int version, error_code&) override {
    head_.status = static_cast<unsigned>(code);
    head_.reason.assign(reason.data(), reason.size());
    head_.version = static_cast<unsigned>(version);
  }
  void on_field_impl(boost::beast::http::field name, string_view name_string, string_view value,
                     error_code&) override {
    const std::string_view n(name_string.data(), name_string.size());
    const std::string_view v(value.data(), value.size());
    if (this->is_header_done()) {
      head_.has_trailers = true;
      head_.trailers.Add(name, n, v);
    } else {
      head_.fields.Add(name, n, v);
    }
  }
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  size_t on_body_impl(string_view body, error_code& ec) override { return Put(body, ec); }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
  size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) override {
    return Put(body, ec);
  }
  void on_finish_impl(error_code&) override {}

  // What Beast's buffer_body reader does.
  size_t Put(string_view bytes, error_code& ec) {
    if (body_.data == nullptr) {
      ec = boost::beast::http::error::need_buffer;
      return 0;
    }
    const size_t n = std::min(body_.size, bytes.size());
    if (n != 0) std::memcpy(body_.data, bytes.data(), n);
    body_.data = static_cast<char*>(body_.data) + n;
    body_.size -= n;
    if (n != bytes.size()) ec = boost::beast::http::error::need_buffer;
    return n;
  }

  HttpHead& head_;
  boost::beast::http::buffer_body::value_type body_{};
};

// Appends a chunk's header without extensions, "<size in hex>\r\n", to `out` (size > 0).
void AppendChunkHeader(size_t size, std::string& out);
// Appends the last chunk of a chunked body to `out`: "0\r\n", each trailer field as
// "name: value\r\n" (what Beast's make_chunk_last writes for the same fields), and the empty line.
void AppendLastChunk(const HeaderFields& trailers, std::string& out);

// The head of a request or an answer as it goes on the wire, byte for byte what Beast's serializer
// writes for the same message (start line, each field as "name: value\r\n", the empty line), into
// `out` (cleared first; its capacity is reused). For a message whose body the caller sends as it
// is (framed by the Content-Length among the fields, or by no body): one buffer instead of Beast's
// serializer. `host`, when not empty, is the Host field written (right after the request line) in
// place of the request's own.
void SerializeRequestHead(const HttpHead& request, std::string& out, std::string_view host = {});
void SerializeResponseHead(const HttpHead& response, std::string& out);

// The head as a Beast header (the fields in order), for Beast's serializer: a message that
// streams through, or goes out chunked.
boost::beast::http::request_header<> ToBeastRequest(const HttpHead& request);
boost::beast::http::response_header<> ToBeastResponse(const HttpHead& response);

// The `timeout` query parameter (whole seconds, as Qdrant reads it) of a request target
// ("/collections/c/points/search?timeout=30" -> 30s); nullopt when absent or not a number.
std::optional<Duration> QueryTimeout(std::string_view target);

// The path of a request target, without the query string.
std::string_view PathOf(std::string_view target);

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_HTTP_UTIL_H_
