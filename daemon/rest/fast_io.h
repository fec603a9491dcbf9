// The REST hot path's reads and writes: Beast's parser and serializer driven by hand, without
// Beast's composed operations. A message that is already in the buffer is parsed at once, and a
// write goes out with one non-blocking send when the socket takes it (almost always: answers are
// small), so a request costs its four system calls and no completion handler beyond the two
// reads that must wait. Only when the socket would block does an Asio operation start. The reads
// are async_read_some through a Reader (SocketReader; an upstream connection's AnswerReader takes
// over its idle watch): a read costs no epoll_ctl, as Asio's async_wait does, but Boost 1.74 tries
// a recv first unless the last read returned 0 bytes.
//
//   ReadUntil(socket, buffer, parser, HeaderDone{}, [self](error_code ec, size_t) { ... });
//   WriteAll(socket, serializer, [self](error_code ec, size_t) { ... });
//
// Handlers may run inline (before the call returns) or later on the socket's io_context thread.
// Errors are Beast's and Asio's: http::error::end_of_stream (closed before a byte of a message),
// partial_message, buffer_overflow (`buffer` full before the header is), header_limit, body_limit,
// need_buffer (a buffer_body's buffer is full: not an error for the caller), ... Thread-safety:
// none; the socket's io_context thread.
#ifndef QPOOL_DAEMON_REST_FAST_IO_H_
#define QPOOL_DAEMON_REST_FAST_IO_H_

#include <algorithm>
#include <array>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/write.hpp>
#include <cstddef>
#include <utility>

namespace qpool::rest {

// How much the next read into `buffer` asks for, as Beast reads: what the buffer has room for
// without growing (at least 512 bytes, at most 64 KiB), never past buffer.max_size(). 0: full.
inline size_t ReadSize(const boost::beast::flat_buffer& buffer) {
  const size_t room = buffer.max_size() - buffer.size();
  return std::min<size_t>(std::max<size_t>(512, buffer.capacity() - buffer.size()),
                          std::min<size_t>(65536, room));
}

// ReadUntil conditions.
struct HeaderDone {
  template <bool kIsRequest>
  bool operator()(const boost::beast::http::basic_parser<kIsRequest>& parser) const {
    return parser.is_header_done();
  }
};
struct MessageDone {
  template <bool kIsRequest>
  bool operator()(const boost::beast::http::basic_parser<kIsRequest>& parser) const {
    return parser.is_done();
  }
};

// Feeds `parser` what `buffer` holds until `done(parser)`, an error, or the buffer runs out
// (http::error::need_more). A buffer_body whose buffer is full stops it with need_buffer.
template <bool kIsRequest, class Done>
boost::system::error_code ParseBuffered(boost::beast::flat_buffer& buffer,
                                        boost::beast::http::basic_parser<kIsRequest>& parser,
                                        const Done& done) {
  boost::system::error_code ec;
  while (!done(parser)) {
    if (buffer.size() == 0) return boost::beast::http::error::need_more;
    const size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec) return ec;
  }
  return ec;
}

// ReadUntil's source of bytes on a stream (a socket, or any AsyncReadStream whose handlers do not
// run inline): each ReadSome is one async_read_some into `buffer` (ReadSize bytes asked),
// committed before the handler runs. A cheap handle, copied into the pending handler; the stream
// and the buffer outlive the read.
template <class Stream>
class StreamReader {
 public:
  StreamReader(Stream& stream, boost::beast::flat_buffer& buffer)
      : stream_(&stream), buffer_(&buffer) {}

  boost::beast::flat_buffer& buffer() const { return *buffer_; }

  // Appends what arrives next to buffer() and calls handler(ec) from the event loop (eof: the
  // peer closed). buffer() must have room (ReadSize above 0).
  template <class Handler>
  void ReadSome(Handler&& handler) const {
    stream_->async_read_some(buffer_->prepare(ReadSize(*buffer_)),
                             [buffer = buffer_, handler = std::forward<Handler>(handler)](
                                 boost::system::error_code ec, size_t bytes) mutable {
                               buffer->commit(bytes);
                               handler(ec);
                             });
  }

 private:
  Stream* stream_;
  boost::beast::flat_buffer* buffer_;
};
using SocketReader = StreamReader<boost::asio::ip::tcp::socket>;

// Parses until `done(parser)`, reading through `reader` into reader.buffer() as needed. A Reader
// is a cheap handle (copied into pending handlers) with SocketReader's buffer() and ReadSome().
// Calls handler(ec, 0) once (Beast's handler signature; the count is not kept).
template <class Reader, bool kIsRequest, class Done, class Handler>
void ReadUntil(Reader reader, boost::beast::http::basic_parser<kIsRequest>& parser, Done done,
               Handler&& handler) {
  namespace http = boost::beast::http;
  boost::beast::flat_buffer& buffer = reader.buffer();
  boost::system::error_code ec = ParseBuffered(buffer, parser, done);
  if (ec != http::error::need_more) {
    handler(ec, size_t{0});
    return;
  }
  if (ReadSize(buffer) == 0) {
    handler(http::error::buffer_overflow, size_t{0});
    return;
  }
  reader.ReadSome([reader, &parser, done,
                   handler = std::forward<Handler>(handler)](boost::system::error_code ec) mutable {
    if (ec == boost::asio::error::eof) {
      if (!parser.got_some()) {
        handler(http::error::end_of_stream, size_t{0});
        return;
      }
      ec = {};
      parser.put_eof(ec);  // a body delimited by the close ends here; anything else is partial
      handler(ec, size_t{0});
      return;
    }
    if (ec) {
      handler(ec, size_t{0});
      return;
    }
    ReadUntil(reader, parser, done, std::move(handler));
  });
}

// ReadUntil reading `socket` into `buffer` (SocketReader).
template <bool kIsRequest, class Done, class Handler>
void ReadUntil(boost::asio::ip::tcp::socket& socket, boost::beast::flat_buffer& buffer,
               boost::beast::http::basic_parser<kIsRequest>& parser, Done done, Handler&& handler) {
  ReadUntil(SocketReader(socket, buffer), parser, std::move(done), std::forward<Handler>(handler));
}

// Writes what `serializer` has: non-blocking sends while the socket takes them, then
// http::async_write for the rest. Calls handler(ec, 0) once; need_buffer (a buffer_body with
// more to come) reaches the handler as success. Puts the socket in non-blocking mode.
template <class Serializer, class Handler>
void WriteAll(boost::asio::ip::tcp::socket& socket, Serializer& serializer, Handler&& handler) {
  namespace http = boost::beast::http;
  boost::system::error_code ec;
  if (!socket.non_blocking()) socket.non_blocking(true, ec);
  while (!ec && !serializer.is_done()) {
    http::write_some(socket, serializer, ec);
    if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
      http::async_write(
          socket, serializer,
          [handler = std::forward<Handler>(handler)](boost::system::error_code ec, size_t) mutable {
            if (ec == http::error::need_buffer) ec = {};
            handler(ec, size_t{0});
          });
      return;
    }
    if (ec) break;
  }
  if (ec == http::error::need_buffer) ec = {};
  handler(ec, size_t{0});
}

// Writes `buffers` in order (one sendmsg while the socket takes them, then asio::async_write for
// the rest). What they point at must stay valid until the handler runs. Calls handler(ec, 0)
// once. Puts the socket in non-blocking mode.
template <size_t kCount, class Handler>
void WriteBuffers(boost::asio::ip::tcp::socket& socket,
                  const std::array<boost::asio::const_buffer, kCount>& buffers, Handler&& handler) {
  boost::system::error_code ec;
  if (!socket.non_blocking()) socket.non_blocking(true, ec);
  size_t total = 0;
  for (const auto& buffer : buffers) total += buffer.size();
  size_t written = ec ? 0 : socket.write_some(buffers, ec);
  if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
    ec = {};
    written = 0;
  }
  if (ec || written == total) {
    handler(ec, size_t{0});
    return;
  }
  boost::beast::buffers_suffix<std::array<boost::asio::const_buffer, kCount>> rest(buffers);
  rest.consume(written);
  boost::asio::async_write(
      socket, rest,
      [handler = std::forward<Handler>(handler)](boost::system::error_code ec, size_t) mutable {
        handler(ec, size_t{0});
      });
}

// Writes `head` then `body`: WriteBuffers with those two.
template <class Handler>
void WriteHeadAndBody(boost::asio::ip::tcp::socket& socket, boost::asio::const_buffer head,
                      boost::asio::const_buffer body, Handler&& handler) {
  WriteBuffers(socket, std::array<boost::asio::const_buffer, 2>{head, body},
               std::forward<Handler>(handler));
}

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_FAST_IO_H_
