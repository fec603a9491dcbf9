#include "daemon/rest/answer_writer.h"

#include <array>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include "daemon/rest/fast_io.h"
#include "daemon/rest/http_util.h"
#include "daemon/rest/request_reader.h"
#include "daemon/rest/rest_exchange.h"

namespace qpool::rest {
namespace {

namespace http = boost::beast::http;
using boost::system::error_code;

// An answer's chunk buffer up to this size stays with the app connection for its next answers
// (the same bound as the read buffer's, RequestReader::ReadNext): an idle connection holds little.
constexpr size_t kKeptChunkBytes = 16 * 1024;

}  // namespace

void AnswerWriter::Reset() {
  serializer_.reset();
  message_.reset();
  chunk_size_ = 0;
  upstream_reusable_ = false;
  close_after_ = false;
}

void AnswerWriter::Forward(RestExchange& exchange) {
  const RestRequest& request = request_;
  exchange_ = &exchange;
  RestExchange::ResponseParser& parser = exchange.response();
  HttpHead& response = parser.head();
  upstream_reusable_ = response.KeepAlive();
  const auto length = parser.content_length();
  const bool has_body = !parser.is_done();
  StripHopByHop(response.fields);
  const bool old_client = request.app_version == 10;
  response.version = request.app_version;
  if (length) {
    // Qdrant's Content-Length field stays as it came; repeated ones become one.
    if (response.fields.Count(http::field::content_length) != 1) {
      response.SetContentLength(*length);
    }
  } else if (has_body) {
    // Chunked from Qdrant, or delimited by its close: chunked to a 1.1 app, close-delimited to
    // a 1.0 one.
    if (old_client) {
      close_after_ = true;
    } else {
      response.SetChunked();
    }
  }
  if (app_.draining) close_after_ = true;
  response.SetKeepAlive(request.keep_alive && !close_after_ && request.parser->is_done());
  RelayChunk();  // the serializer, if one is needed, comes with the first write
}

void AnswerWriter::RelayChunk() {
  RestExchange& ex = *exchange_;
  RestExchange::ResponseParser& parser = ex.response();
  auto& body = parser.body();
  if (parser.is_done()) {
    body_ = {nullptr, 0, false};
    WriteChunk();
    return;
  }
  if (chunk_size_ == 0) {
    // Sized to the answer when its length is known (most are small); not zeroed. A buffer up to
    // kKeptChunkBytes stays for the connection's next answers.
    const auto left = parser.content_length_remaining();  // boost::optional
    chunk_size_ = left ? static_cast<size_t>(std::min<uint64_t>(*left, kChunkBytes)) : kChunkBytes;
    if (chunk_size_ > chunk_capacity_) {
      chunk_.reset(new char[chunk_size_]);
      chunk_capacity_ = chunk_size_;
    }
  }
  body.data = chunk_.get();
  body.size = chunk_size_;
  const uint64_t generation = ex.generation();
  // Some of the body (whatever the upstream buffer holds, else what the next read brings), or
  // the end of the answer.
  auto got_some = [&parser, size = chunk_size_](const auto& basic) {
    return basic.is_done() || parser.body().size < size;
  };
  ex.ReadAnswerBody(got_some, [self = owner_.Hold(), this, &ex, generation](error_code ec, size_t) {
    if (generation != ex.generation() || app_.closed) return;
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      // Half an answer is out: the app sees its connection end.
      const size_t node = ex.node();
      owner_.EndUpstream(/*failed=*/true);
      balancer_.OnAttemptEnd(node, /*failed=*/true);
      owner_.FinishRequest(502);
      owner_.Close();
      return;
    }
    RestExchange::ResponseParser& parser = ex.response();
    const size_t got = chunk_size_ - parser.body().size;
    if (parser.is_done() && parser.head().has_trailers && parser.head().Chunked()) {
      WriteTail(got);  // chunked to the app: the trailers go on
      return;
    }
    // No bytes: no data chunk (Beast's serializer would frame an empty buffer as "0\r\n\r\n").
    body_ = {got != 0 ? chunk_.get() : nullptr, got, !parser.is_done()};
    WriteChunk();
  });
}

void AnswerWriter::WriteChunk() {
  RestExchange& ex = *exchange_;
  RestExchange::ResponseParser& parser = ex.response();
  const uint64_t generation = ex.generation();
  auto self = owner_.Hold();
  const HttpHead& response = parser.head();
  if (!serializer_ && parser.is_done() && !response.Chunked()) {
    // The whole answer was read, and it goes out framed as it came (Content-Length, no body, or
    // the close): its head and body in one send, without a body serializer.
    SerializeResponseHead(response, wire_head_);
    const size_t size = body_.data == nullptr ? 0 : body_.size;  // what RelayChunk read
    WriteHeadAndBody(app_.socket, boost::asio::buffer(wire_head_),
                     boost::asio::buffer(body_.data, size),
                     [self, this, &ex, generation](error_code ec, size_t) {
                       if (Written(ex, generation, ec)) Done();
                     });
    return;
  }
  if (!serializer_) {
    // Streamed or chunked: Beast's serializer, over the head as a Beast message.
    message_.emplace(ToBeastResponse(response));
    serializer_.emplace(*message_);
  }
  message_->body() = body_;
  WriteAll(app_.socket, *serializer_, [self, this, &ex, generation](error_code ec, size_t) {
    if (ec == http::error::need_buffer) ec = {};
    if (!Written(ex, generation, ec)) return;
    if (serializer_->is_done()) {
      Done();
    } else {
      RelayChunk();
    }
  });
}

void AnswerWriter::WriteTail(size_t got) {
  RestExchange& ex = *exchange_;
  RestExchange::ResponseParser& parser = ex.response();
  const uint64_t generation = ex.generation();
  if (serializer_) {
    wire_head_.clear();  // the head went out with the first chunk
  } else {
    SerializeResponseHead(parser.head(), wire_head_);  // the whole answer was read at once
  }
  tail_.clear();
  if (got != 0) {
    AppendChunkHeader(got, wire_head_);
    tail_.append("\r\n", 2);
  }
  AppendLastChunk(parser.head().trailers, tail_);
  const std::array<boost::asio::const_buffer, 3> buffers{boost::asio::buffer(wire_head_),
                                                         boost::asio::buffer(chunk_.get(), got),
                                                         boost::asio::buffer(tail_)};
  WriteBuffers(app_.socket, buffers,
               [self = owner_.Hold(), this, &ex, generation](error_code ec, size_t) {
                 if (Written(ex, generation, ec)) Done();
               });
}

bool AnswerWriter::Written(const RestExchange& exchange, uint64_t generation,
                           const error_code& ec) {
  if (generation != exchange.generation() || app_.closed) return false;
  if (ec) {
    // The app went away mid-answer: the request ends, and so does its connection.
    owner_.EndUpstream(/*failed=*/false);
    owner_.FinishRequest(499);
    owner_.Close();
    return false;
  }
  return true;
}

void AnswerWriter::Done() {
  RestExchange& ex = *exchange_;
  const RestExchange::ResponseParser& parser = ex.response();
  const unsigned status = parser.head().status;
  ex.End(upstream_reusable_ && ex.RequestSent() && parser.is_done(), false);
  chunk_size_ = 0;
  if (chunk_capacity_ > kKeptChunkBytes) {
    chunk_.reset();
    chunk_capacity_ = 0;
  }
  const RestRequest& request = request_;
  const bool close = close_after_ || !request.keep_alive || !request.parser->is_done();
  owner_.FinishRequest(status);
  if (close) {
    owner_.Close();
  } else {
    owner_.ReadRequest();
  }
}

}  // namespace qpool::rest
