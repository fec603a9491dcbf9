#include "daemon/rest/http_util.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/rfc7230.hpp>
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

bool StripHopByHop(http::fields& fields) {
  // One pass over the fields (most requests and answers have none of these): the fixed names by
  // their enum, then, only when a Connection field named others, those by name.
  bool named_others = false;
  bool te_trailers = false;
  for (auto it = fields.begin(); it != fields.end();) {
    switch (it->name()) {
      case http::field::connection:
        for (auto token : http::token_list(it->value())) {
          if (!boost::beast::iequals(token, "close") &&
              !boost::beast::iequals(token, "keep-alive")) {
            named_others = true;
          }
        }
        if (named_others) {
          ++it;  // kept until its tokens were read, below
          continue;
        }
        it = fields.erase(it);
        continue;
      case http::field::te:
        te_trailers = te_trailers || ListsTrailers(it->value());
        it = fields.erase(it);
        continue;
      case http::field::keep_alive:
      case http::field::transfer_encoding:
      case http::field::upgrade:
      case http::field::proxy_connection:
      case http::field::proxy_authenticate:
      case http::field::proxy_authorization:
        it = fields.erase(it);
        continue;
      default:
        ++it;
    }
  }
  if (!named_others) return te_trailers;
  std::vector<std::string> named;
  for (auto it = fields.find(http::field::connection);
       it != fields.end() && it->name() == http::field::connection; ++it) {
    for (auto token : http::token_list(it->value())) named.emplace_back(token);
  }
  for (const std::string& name : named) fields.erase(name);
  fields.erase(http::field::connection);
  return te_trailers;
}

namespace {

void AppendFields(const http::fields& fields, std::string& out, bool skip_host = false) {
  for (const auto& field : fields) {
    if (skip_host && field.name() == http::field::host) continue;
    const auto name = field.name_string();
    const auto value = field.value();
    // Beast keeps a field as one "name: value\r\n" run (what its serializer sends); taken whole
    // when the views show that layout, piece by piece otherwise.
    if (value.data() == name.data() + name.size() + 2 &&
        std::string_view(value.data() + value.size(), 2) == "\r\n") {
      out.append(name.data(), name.size() + 2 + value.size() + 2);
      continue;
    }
    out.append(name.data(), name.size());
    out.append(": ", 2);
    out.append(value.data(), value.size());
    out.append("\r\n", 2);
  }
  out.append("\r\n", 2);
}

void AppendVersion(unsigned version, std::string& out) {
  const char text[] = {'H', 'T',
                       'T', 'P',
                       '/', static_cast<char>('0' + version / 10),
                       '.', static_cast<char>('0' + version % 10)};
  out.append(text, sizeof(text));
}

}  // namespace

void SerializeHead(const http::request_header<>& request, std::string& out, std::string_view host) {
  out.clear();
  const auto method = request.method_string();
  const auto target = request.target();
  out.append(method.data(), method.size());
  out.push_back(' ');
  out.append(target.data(), target.size());
  out.push_back(' ');
  AppendVersion(request.version(), out);
  out.append("\r\n", 2);
  if (!host.empty()) {
    out.append("Host: ", 6);
    out.append(host.data(), host.size());
    out.append("\r\n", 2);
  }
  AppendFields(request, out, /*skip_host=*/!host.empty());
}

void SerializeHead(const http::response_header<>& response, std::string& out) {
  out.clear();
  AppendVersion(response.version(), out);
  const unsigned code = response.result_int();
  const char status[] = {' ', static_cast<char>('0' + code / 100),
                         static_cast<char>('0' + code / 10 % 10),
                         static_cast<char>('0' + code % 10), ' '};
  out.append(status, sizeof(status));
  auto reason = response.reason();
  if (reason.empty()) reason = http::obsolete_reason(response.result());
  out.append(reason.data(), reason.size());
  out.append("\r\n", 2);
  AppendFields(response, out);
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

void AppendLastChunk(const http::fields& trailers, std::string& out) {
  out.append("0\r\n", 3);
  AppendFields(trailers, out);
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
