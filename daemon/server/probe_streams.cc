#include "daemon/server/probe_streams.h"

#include <algorithm>
#include <cstring>

namespace qpool::server {

int32_t ProbeStreams::Submit(nghttp2_session* session, ProbeStream& probe, const nghttp2_nv* nva,
                             size_t nvlen) {
  nghttp2_data_provider provider{};
  provider.source.ptr = &probe;
  provider.read_callback = &ProbeStreams::ReadBody;
  // No stream user data: the connection's callbacks find no Attempt there and look here.
  const int32_t stream_id =
      nghttp2_submit_request(session, nullptr, nva, nvlen, &provider, nullptr);
  if (stream_id > 0) probes_.emplace_back(stream_id, &probe);
  return stream_id;
}

ProbeStream* ProbeStreams::Of(int32_t stream_id) const {
  for (const auto& [id, probe] : probes_) {
    if (id == stream_id) return probe;
  }
  return nullptr;
}

ProbeStream* ProbeStreams::Take(int32_t stream_id) {
  for (auto it = probes_.begin(); it != probes_.end(); ++it) {
    if (it->first == stream_id) {
      ProbeStream* probe = it->second;
      probes_.erase(it);
      return probe;
    }
  }
  return nullptr;
}

void ProbeStreams::FailAll() {
  std::vector<std::pair<int32_t, ProbeStream*>> probes = std::move(probes_);
  probes_.clear();
  for (auto& [id, probe] : probes) probe->OnProbeClosed(NGHTTP2_INTERNAL_ERROR, true);
}

ssize_t ProbeStreams::ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                               uint32_t* data_flags, nghttp2_data_source* source, void*) {
  auto* probe = static_cast<ProbeStream*>(source->ptr);
  const size_t n = std::min(length, probe->request_body.size() - probe->request_sent);
  std::memcpy(buf, probe->request_body.data() + probe->request_sent, n);
  probe->request_sent += n;
  if (probe->request_sent == probe->request_body.size()) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

}  // namespace qpool::server
