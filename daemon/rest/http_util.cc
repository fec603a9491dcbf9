#include "daemon/rest/http_util.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/status.hpp>
#include <iterator>
#include <vector>

#include "absl/strings/numbers.h"
#include "nlohmann/json.hpp"

namespace qpool::rest {

namespace http = boost::beast::http;

std::string ErrorBody(std::string_view message) {
  // dump() with the replace handler: a message quoting invalid UTF-8 (a garbage request line)
  // still gives a valid document.
  nlohmann::json status;
  status["error"] = std::string(message);
  std::string body = R"({"status":)";
  body += status.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  body += R"(,"time":0.0})";
  return body;
}

namespace {

// Whether a TE field value lists "trailers" (t-codings: an ext-list). Kept out of StripHopByHop's
// loop, which almost never meets a TE field.
[[gnu::noinline]] bool ListsTrailers(boost::beast::string_view value) {
  return http::ext_list(value).exists("trailers");
}

}  // namespace

// --- FieldText ---------------------------------------------------------------------------------

FieldText& FieldText::operator=(const FieldText& other) {
  if (this == &other) return *this;
  size_ = 0;
  if (other.size_ != 0) std::memcpy(Grow(other.size_), other.data_.get(), other.size_);
  return *this;
}

FieldText& FieldText::operator=(FieldText&& other) noexcept {
  if (this == &other) return *this;
  data_ = std::move(other.data_);
  size_ = std::exchange(other.size_, 0);
  capacity_ = std::exchange(other.capacity_, 0);
  return *this;
}

void FieldText::Reallocate(size_t needed) {
  const size_t capacity = std::max<size_t>({needed, 2 * capacity_, 512});
  std::unique_ptr<char[]> data(new char[capacity]);
  if (size_ != 0) std::memcpy(data.get(), data_.get(), size_);
  data_ = std::move(data);
  capacity_ = capacity;
}

// --- HeaderFields ------------------------------------------------------------------------------

HeaderFields& HeaderFields::operator=(HeaderFields&& other) noexcept {
  if (this == &other) return *this;
  text_ = std::move(other.text_);
  entries_ = std::move(other.entries_);
  other.entries_.clear();
  live_ = std::exchange(other.live_, 0);
  return *this;
}

void HeaderFields::Clear() {
  text_.Clear();
  entries_.clear();
  live_ = 0;
}

void HeaderFields::Add(http::field name, std::string_view name_string, std::string_view value) {
  if (text_.Contains(name_string) || text_.Contains(value)) {
    // A view of this object's own text (Set(x, *Get(y))): copied first, the text may move.
    const std::string name_copy(name_string);
    const std::string value_copy(value);
    Add(name, name_copy, value_copy);
    return;
  }
  Entry e;
  e.name = name;
  e.erased = false;
  e.at = static_cast<uint32_t>(text_.size());
  e.name_size = static_cast<uint32_t>(name_string.size());
  e.value_size = static_cast<uint32_t>(value.size());
  char* out = text_.Grow(name_string.size() + 2 + value.size() + 2);
  std::memcpy(out, name_string.data(), name_string.size());
  out += name_string.size();
  out[0] = ':';
  out[1] = ' ';
  out += 2;
  if (!value.empty()) std::memcpy(out, value.data(), value.size());
  out += value.size();
  out[0] = '\r';
  out[1] = '\n';
  entries_.push_back(e);
  live_++;
}

void HeaderFields::Add(http::field name, std::string_view value) {
  const auto text = http::to_string(name);
  Add(name, std::string_view(text.data(), text.size()), value);
}

void HeaderFields::Add(std::string_view name_string, std::string_view value) {
  Add(http::string_to_field(BeastView(name_string)), name_string, value);
}

bool HeaderFields::Named(const Entry& e, std::string_view name) const {
  return e.name_size == name.size() &&
         boost::beast::iequals(boost::beast::string_view(text_.data() + e.at, e.name_size),
                               BeastView(name));
}

std::optional<std::string_view> HeaderFields::Get(http::field name) const {
  for (const Entry& e : entries_) {
    if (!e.erased && e.name == name) return FieldOf(e).value;
  }
  return std::nullopt;
}

std::optional<std::string_view> HeaderFields::Get(std::string_view name) const {
  for (const Entry& e : entries_) {
    if (!e.erased && Named(e, name)) return FieldOf(e).value;
  }
  return std::nullopt;
}

size_t HeaderFields::Count(http::field name) const {
  size_t n = 0;
  for (const Entry& e : entries_) n += !e.erased && e.name == name;
  return n;
}

size_t HeaderFields::Count(std::string_view name) const {
  size_t n = 0;
  for (const Entry& e : entries_) n += !e.erased && Named(e, name);
  return n;
}

size_t HeaderFields::Erase(http::field name) {
  size_t n = 0;
  for (Entry& e : entries_) {
    if (!e.erased && e.name == name) {
      e.erased = true;
      n++;
    }
  }
  live_ -= n;
  return n;
}

size_t HeaderFields::Erase(std::string_view name) {
  size_t n = 0;
  for (Entry& e : entries_) {
    if (!e.erased && Named(e, name)) {
      e.erased = true;
      n++;
    }
  }
  live_ -= n;
  return n;
}

void HeaderFields::Set(http::field name, std::string_view value) {
  Erase(name);
  Add(name, value);
}

void HeaderFields::Set(std::string_view name, std::string_view value) {
  Erase(name);
  Add(name, value);
}

size_t HeaderFields::WireSize(bool skip_host) const {
  size_t size = 2;
  for (const Entry& e : entries_) {
    if (e.erased || (skip_host && e.name == http::field::host)) continue;
    size += e.name_size + 2 + e.value_size + 2;
  }
  return size;
}

char* HeaderFields::WriteTo(char* out, bool skip_host) const {
  // Runs of fields not erased go out whole.
  size_t run_at = 0;
  size_t run_end = 0;
  for (const Entry& e : entries_) {
    if (e.erased || (skip_host && e.name == http::field::host)) continue;
    if (e.at != run_end) {
      if (run_end != run_at) std::memcpy(out, text_.data() + run_at, run_end - run_at);
      out += run_end - run_at;
      run_at = e.at;
    }
    run_end = e.at + e.name_size + 2 + e.value_size + 2;
  }
  if (run_end != run_at) std::memcpy(out, text_.data() + run_at, run_end - run_at);
  out += run_end - run_at;
  out[0] = '\r';
  out[1] = '\n';
  return out + 2;
}

void HeaderFields::AppendTo(std::string& out, bool skip_host) const {
  const size_t at = out.size();
  out.resize(at + WireSize(skip_host));
  WriteTo(out.data() + at, skip_host);
}

// --- HttpHead ----------------------------------------------------------------------------------

void HttpHead::Clear() {
  version = 11;
  method = http::verb::unknown;
  method_string.clear();
  target.clear();
  status = 0;
  reason.clear();
  fields.Clear();
  has_trailers = false;
  trailers.Clear();
}

bool HttpHead::KeepAlive() const {
  const std::optional<std::string_view> connection = fields.Get(http::field::connection);
  if (version < 11) {
    return connection && http::token_list(BeastView(*connection)).exists("keep-alive");
  }
  return !connection || !http::token_list(BeastView(*connection)).exists("close");
}

void HttpHead::SetKeepAlive(bool keep_alive) {
  const bool add = version < 11 ? keep_alive : !keep_alive;
  if (!add && fields.Count(http::field::connection) == 0) return;  // nothing to say, nothing said
  std::string value;
  if (const std::optional<std::string_view> connection = fields.Get(http::field::connection)) {
    for (auto token : http::token_list(BeastView(*connection))) {
      if (boost::beast::iequals(token, "close") || boost::beast::iequals(token, "keep-alive")) {
        continue;
      }
      if (!value.empty()) value += ", ";
      value.append(token.data(), token.size());
    }
  }
  if (add) {
    if (!value.empty()) value += ", ";
    value += version < 11 ? "keep-alive" : "close";
  }
  if (value.empty()) {
    fields.Erase(http::field::connection);
  } else {
    fields.Set(http::field::connection, value);
  }
}

bool HttpHead::Chunked() const {
  const std::optional<std::string_view> te = fields.Get(http::field::transfer_encoding);
  if (!te) return false;
  const http::token_list tokens(BeastView(*te));
  for (auto it = tokens.begin(); it != tokens.end();) {
    const auto next = std::next(it);
    if (next == tokens.end()) return boost::beast::iequals(*it, "chunked");
    it = next;
  }
  return false;
}

void HttpHead::SetChunked() {
  fields.Set(http::field::transfer_encoding, "chunked");
  fields.Erase(http::field::content_length);
}

void HttpHead::SetContentLength(uint64_t length) {
  char digits[20];
  char* end = digits + sizeof(digits);
  char* at = end;
  do {
    *--at = static_cast<char>('0' + length % 10);
    length /= 10;
  } while (length != 0);
  fields.Set(http::field::content_length, std::string_view(at, end - at));
}

// --- hop-by-hop --------------------------------------------------------------------------------

bool StripHopByHop(HeaderFields& fields) {
  // One pass over the fields by their enum (most requests and answers have none of these), then,
  // only when a Connection field named others, those by name.
  bool named_others = false;
  bool te_trailers = false;
  for (HeaderFields::Entry& e : fields.entries_) {
    if (e.erased) continue;
    switch (e.name) {
      case http::field::connection: {
        const std::string_view value = fields.FieldOf(e).value;
        for (auto token : http::token_list(BeastView(value))) {
          if (!boost::beast::iequals(token, "close") &&
              !boost::beast::iequals(token, "keep-alive")) {
            named_others = true;
          }
        }
        break;
      }
      case http::field::te: {
        const std::string_view value = fields.FieldOf(e).value;
        te_trailers = te_trailers || ListsTrailers(BeastView(value));
        break;
      }
      case http::field::keep_alive:
      case http::field::transfer_encoding:
      case http::field::upgrade:
      case http::field::proxy_connection:
      case http::field::proxy_authenticate:
      case http::field::proxy_authorization:
        break;
      default:
        continue;
    }
    if (e.name == http::field::connection && named_others) continue;  // read below, then erased
    e.erased = true;
    fields.live_--;
  }
  if (!named_others) return te_trailers;
  std::vector<std::string> named;
  fields.ForEach([&](const HeaderFields::Field& field) {
    if (field.name != http::field::connection) return;
    for (auto token : http::token_list(BeastView(field.value))) {
      named.emplace_back(token);
    }
  });
  for (const std::string& name : named) fields.Erase(name);
  fields.Erase(http::field::connection);
  return te_trailers;
}

namespace {

char* Put(char* out, std::string_view text) {
  if (!text.empty()) std::memcpy(out, text.data(), text.size());
  return out + text.size();
}

char* PutVersion(char* out, unsigned version) {
  const char text[] = {'H', 'T',
                       'T', 'P',
                       '/', static_cast<char>('0' + version / 10),
                       '.', static_cast<char>('0' + version % 10)};
  std::memcpy(out, text, sizeof(text));
  return out + sizeof(text);
}

std::string_view ReasonOf(const HttpHead& response) {
  if (!response.reason.empty()) return response.reason;
  const auto reason = http::obsolete_reason(http::int_to_status(response.status));
  return std::string_view(reason.data(), reason.size());
}

}  // namespace

void SerializeRequestHead(const HttpHead& request, std::string& out, std::string_view host) {
  // The size first, then one resize and plain copies.
  const bool skip_host = !host.empty();
  const size_t size = request.method_string.size() + 1 + request.target.size() + 1 + 8 + 2 +
                      (skip_host ? 6 + host.size() + 2 : 0) + request.fields.WireSize(skip_host);
  out.clear();
  out.resize(size);
  char* at = out.data();
  at = Put(at, request.method_string);
  *at++ = ' ';
  at = Put(at, request.target);
  *at++ = ' ';
  at = PutVersion(at, request.version);
  at = Put(at, "\r\n");
  if (skip_host) {
    at = Put(at, "Host: ");
    at = Put(at, host);
    at = Put(at, "\r\n");
  }
  request.fields.WriteTo(at, skip_host);
}

void SerializeResponseHead(const HttpHead& response, std::string& out) {
  const std::string_view reason = ReasonOf(response);
  const size_t size = 8 + 5 + reason.size() + 2 + response.fields.WireSize();
  out.clear();
  out.resize(size);
  char* at = PutVersion(out.data(), response.version);
  const unsigned code = response.status;
  const char status[] = {' ', static_cast<char>('0' + code / 100),
                         static_cast<char>('0' + code / 10 % 10),
                         static_cast<char>('0' + code % 10), ' '};
  std::memcpy(at, status, sizeof(status));
  at += sizeof(status);
  at = Put(at, reason);
  at = Put(at, "\r\n");
  response.fields.WriteTo(at);
}

namespace {

void CopyFields(const HeaderFields& fields, http::fields& out) {
  fields.ForEach([&](const HeaderFields::Field& field) {
    out.insert(field.name, BeastView(field.name_string), BeastView(field.value));
  });
}

}  // namespace

http::request_header<> ToBeastRequest(const HttpHead& request) {
  http::request_header<> out;
  if (request.method != http::verb::unknown) {
    out.method(request.method);
  } else {
    out.method_string(request.method_string);
  }
  out.target(request.target);
  out.version(request.version);
  CopyFields(request.fields, out);
  return out;
}

http::response_header<> ToBeastResponse(const HttpHead& response) {
  http::response_header<> out;
  out.result(response.status);
  out.reason(response.reason);
  out.version(response.version);
  CopyFields(response.fields, out);
  return out;
}

void AppendChunkHeader(size_t size, std::string& out) {
  char digits[2 * sizeof(size_t)];
  char* end = digits + sizeof(digits);
  char* at = end;
  do {
    *--at = "0123456789abcdef"[size & 0xf];
    size >>= 4;
  } while (size != 0);
  out.append(at, end);
  out.append("\r\n", 2);
}

void AppendLastChunk(const HeaderFields& trailers, std::string& out) {
  out.append("0\r\n", 3);
  trailers.AppendTo(out);
}

std::string_view PathOf(std::string_view target) {
  return target.substr(0, std::min(target.find('?'), target.size()));
}

std::optional<Duration> QueryTimeout(std::string_view target) {
  const size_t question = target.find('?');
  if (question == std::string_view::npos) return std::nullopt;
  std::string_view query = target.substr(question + 1);
  while (!query.empty()) {
    const size_t amp = std::min(query.find('&'), query.size());
    const std::string_view pair = query.substr(0, amp);
    query.remove_prefix(std::min(amp + 1, query.size()));
    constexpr std::string_view kKey = "timeout=";
    if (pair.substr(0, kKey.size()) != kKey) continue;
    uint32_t seconds = 0;
    const std::string_view value = pair.substr(kKey.size());
    if (!absl::SimpleAtoi(absl::string_view(value.data(), value.size()), &seconds)) {
      return std::nullopt;
    }
    return std::chrono::seconds(seconds);
  }
  return std::nullopt;
}

}  // namespace qpool::rest
