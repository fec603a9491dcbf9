#include "emulator/faults.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/common/grpc_code.h"
#include "google/protobuf/util/json_util.h"

namespace qpool::emulator {
namespace {

std::string PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

}  // namespace

absl::StatusOr<absl::StatusCode> ParseStatusCode(absl::string_view text) {
  int number;
  if (absl::SimpleAtoi(text, &number) && number > 0 && number <= 16) {
    return static_cast<absl::StatusCode>(number);
  }
  std::string upper = absl::AsciiStrToUpper(text);
  for (int i = 1; i <= 16; ++i) {
    if (upper == GrpcCodeName(i)) return static_cast<absl::StatusCode>(i);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown gRPC status code \"", text, "\""));
}

absl::Status FaultInjector::SetConfig(const FaultConfig& config) {
  absl::flat_hash_map<std::string, Rule> rules;
  for (const auto& entry : config.methods()) {
    // Not a structured binding: C++17 lambdas cannot capture those (clang rejects it).
    const std::string& method = entry.first;
    const auto& faults = entry.second;
    auto field = [&](absl::string_view name) {
      return absl::StrCat("methods[\"", method, "\"].", name);
    };
    Rule rule;
    rule.latency = absl::Milliseconds(faults.latency_ms());
    rule.jitter = absl::Milliseconds(faults.jitter_ms());
    if (!(faults.error_rate() >= 0 && faults.error_rate() <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat(field("error_rate"), " must be in [0, 1]"));
    }
    rule.error_rate = faults.error_rate();
    if (!faults.error_code().empty()) {
      absl::StatusOr<absl::StatusCode> code = ParseStatusCode(faults.error_code());
      if (!code.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field("error_code"), ": ", code.status().message()));
      }
      rule.error.code = *code;
    }
    rule.error.message =
        faults.error_message().empty() ? "qdrant-emulator: injected fault" : faults.error_message();
    rule.error.retry_after_s = faults.retry_after_s();
    if (faults.error_phase() == "after") {
      rule.error.after_handler = true;
    } else if (!faults.error_phase().empty() && faults.error_phase() != "before") {
      return absl::InvalidArgumentError(
          absl::StrCat(field("error_phase"), " must be \"before\" or \"after\""));
    }
    rule.hang = faults.hang();
    rules.emplace(method, std::move(rule));
  }
  CloseMode close_mode;
  if (config.close_mode().empty() || config.close_mode() == "goaway") {
    close_mode = CloseMode::kGoaway;
  } else if (config.close_mode() == "abrupt") {
    close_mode = CloseMode::kAbrupt;
  } else {
    return absl::InvalidArgumentError("close_mode must be \"goaway\" or \"abrupt\"");
  }
  absl::MutexLock lock(&mu_);
  config_ = config;
  rules_ = std::move(rules);
  close_mode_ = close_mode;
  calls_since_close_ = 0;
  return absl::OkStatus();
}

absl::Status FaultInjector::SetConfigJson(absl::string_view json) {
  FaultConfig config;
  google::protobuf::util::JsonParseOptions options;
  auto status = google::protobuf::util::JsonStringToMessage(std::string(json), &config, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("fault config: ", status.ToString()));
  }
  return SetConfig(config);
}

FaultConfig FaultInjector::config() const {
  absl::ReaderMutexLock lock(&mu_);
  return config_;
}

std::string FaultInjector::ConfigJson() const { return PrintJson(config()); }

void FaultInjector::SetHangAll(bool hang) {
  absl::MutexLock lock(&mu_);
  hang_all_ = hang;
}

const FaultInjector::Rule* FaultInjector::FindRule(absl::string_view method) const {
  if (rules_.empty()) return nullptr;
  auto it = rules_.find(method);
  if (it != rules_.end()) return &it->second;
  size_t slash = method.rfind('/');
  if (slash != absl::string_view::npos) {
    it = rules_.find(method.substr(slash + 1));
    if (it != rules_.end()) return &it->second;
  }
  it = rules_.find("*");
  return it == rules_.end() ? nullptr : &it->second;
}

bool FaultInjector::ShouldHang(absl::string_view method) const {
  absl::ReaderMutexLock lock(&mu_);
  const Rule* rule = FindRule(method);
  return hang_all_ || (rule != nullptr && rule->hang);
}

CallPlan FaultInjector::OnCall(absl::string_view method) {
  CallPlan plan;
  absl::MutexLock lock(&mu_);
  auto it = calls_.find(method);
  if (it == calls_.end()) it = calls_.emplace(std::string(method), 0).first;
  ++it->second;
  plan.hang = hang_all_;
  if (const Rule* rule = FindRule(method)) {
    plan.delay = rule->latency;
    if (rule->jitter > absl::ZeroDuration()) {
      std::uniform_int_distribution<int64_t> jitter(0, absl::ToInt64Microseconds(rule->jitter));
      plan.delay += absl::Microseconds(jitter(random_));
    }
    if (rule->error_rate > 0 &&
        std::uniform_real_distribution<double>(0, 1)(random_) < rule->error_rate) {
      plan.error = rule->error;
    }
    plan.hang = plan.hang || rule->hang;
  }
  if (plan.hang) counters_.set_hung_calls(counters_.hung_calls() + 1);
  if (config_.close_after_calls() > 0 && ++calls_since_close_ >= config_.close_after_calls()) {
    calls_since_close_ = 0;
    plan.close_after = close_mode_;
  }
  return plan;
}

void FaultInjector::CountWrite(absl::string_view collection) {
  absl::MutexLock lock(&mu_);
  (*counters_.mutable_writes())[std::string(collection)]++;
}

void FaultInjector::CountInjectedError() {
  absl::MutexLock lock(&mu_);
  counters_.set_injected_errors(counters_.injected_errors() + 1);
}

void FaultInjector::CountGoaway() {
  absl::MutexLock lock(&mu_);
  counters_.set_goaways(counters_.goaways() + 1);
}

void FaultInjector::CountAbruptCloses(uint64_t connections) {
  absl::MutexLock lock(&mu_);
  counters_.set_abrupt_closes(counters_.abrupt_closes() + connections);
}

void FaultInjector::CountConnection() {
  absl::MutexLock lock(&mu_);
  counters_.set_connections_accepted(counters_.connections_accepted() + 1);
}

void FaultInjector::CountRestConnectionOpened() {
  absl::MutexLock lock(&mu_);
  ++rest_connections_open_;
  counters_.set_rest_connections_accepted(counters_.rest_connections_accepted() + 1);
  if (rest_connections_open_ > counters_.rest_connections_peak()) {
    counters_.set_rest_connections_peak(rest_connections_open_);
  }
}

void FaultInjector::CountRestConnectionClosed() {
  absl::MutexLock lock(&mu_);
  if (rest_connections_open_ > 0) --rest_connections_open_;
}

void FaultInjector::CountRestRequest() {
  absl::MutexLock lock(&mu_);
  counters_.set_rest_requests(counters_.rest_requests() + 1);
}

void FaultInjector::CountKey(absl::string_view label) {
  absl::MutexLock lock(&mu_);
  (*counters_.mutable_calls_by_key())[std::string(label)] += 1;
}

void FaultInjector::CountRestTlsHandshake(absl::string_view common_name, bool resumed) {
  absl::MutexLock lock(&mu_);
  if (resumed) {
    counters_.set_rest_tls_resumed(counters_.rest_tls_resumed() + 1);
  } else {
    (*counters_.mutable_rest_tls_certs_presented())[std::string(common_name)] += 1;
  }
}

void FaultInjector::CountRestTlsClientClose(bool close_notify) {
  absl::MutexLock lock(&mu_);
  (*counters_.mutable_rest_tls_client_closes())[close_notify ? "close_notify"
                                                             : "without_close_notify"] += 1;
}

void FaultInjector::CountRestTlsReload(bool loaded) {
  absl::MutexLock lock(&mu_);
  if (loaded) {
    counters_.set_rest_tls_reloads(counters_.rest_tls_reloads() + 1);
  } else {
    counters_.set_rest_tls_reload_failures(counters_.rest_tls_reload_failures() + 1);
  }
}

Counters FaultInjector::counters() const {
  absl::ReaderMutexLock lock(&mu_);
  Counters counters = counters_;
  counters.set_rest_connections_open(rest_connections_open_);
  for (const auto& [method, calls] : calls_) (*counters.mutable_calls())[method] = calls;
  return counters;
}

std::string FaultInjector::CountersJson() const { return PrintJson(counters()); }

void FaultInjector::ResetCounters() {
  absl::MutexLock lock(&mu_);
  counters_.Clear();
  calls_.clear();
  counters_.set_rest_connections_peak(rest_connections_open_);
}

}  // namespace qpool::emulator
