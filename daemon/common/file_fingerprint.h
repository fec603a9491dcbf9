// What a secret file is now, to tell whether it changed since it was last read: the resolved path
// (a Kubernetes Secret mount swaps the `..data` symlink to a new directory, so the file's own
// path stays the same while its target changes), the target's inode, size and modification time.
//
//   FileFingerprint before = FileFingerprint::Of("/etc/qpool/api-key");
//   ...
//   if (FileFingerprint::Of("/etc/qpool/api-key") != before) { /* read it again */ }
//
// Thread-safety: a value type; Of() only stats the file.
#ifndef QPOOL_DAEMON_COMMON_FILE_FINGERPRINT_H_
#define QPOOL_DAEMON_COMMON_FILE_FINGERPRINT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace qpool {

struct FileFingerprint {
  std::string resolved_path;  // empty when the file could not be resolved
  uint64_t inode = 0;
  int64_t size = -1;
  int64_t mtime_ns = 0;

  // Never fails: a missing file has an empty fingerprint (which differs from any present one).
  static FileFingerprint Of(const std::string& path);

  bool operator==(const FileFingerprint& other) const {
    return resolved_path == other.resolved_path && inode == other.inode && size == other.size &&
           mtime_ns == other.mtime_ns;
  }
  bool operator!=(const FileFingerprint& other) const { return !(*this == other); }
};

// The whole file. kNotFound / kPermissionDenied / kUnavailable name the path and the reason;
// files over `max_bytes` are refused (kInvalidArgument).
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes = 1 << 20);

}  // namespace qpool

#endif  // QPOOL_DAEMON_COMMON_FILE_FINGERPRINT_H_
