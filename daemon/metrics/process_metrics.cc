#include "daemon/metrics/process_metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"

namespace qpool::metrics {
namespace {

using prometheus::MetricFamily;
using prometheus::MetricType;

void AddFamily(std::vector<MetricFamily>& out, const char* name, const char* help, MetricType type,
               double value) {
  MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  out.push_back(std::move(family));
}

bool ReadFile(const std::string& path, std::string& out) {
  std::ifstream in(path);
  if (!in) return false;
  std::ostringstream text;
  text << in.rdbuf();
  out = text.str();
  return true;
}

// Seconds since the epoch at which the machine booted (btime in /proc/stat).
bool BootTime(double& out) {
  std::ifstream in("/proc/stat");
  std::string key;
  while (in >> key) {
    if (key == "btime") return static_cast<bool>(in >> out);
    in.ignore(1 << 20, '\n');
  }
  return false;
}

}  // namespace

std::vector<MetricFamily> CollectProcessMetrics(const std::string& proc_dir) {
  std::vector<MetricFamily> out;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page_size = static_cast<double>(sysconf(_SC_PAGESIZE));

  std::string stat;
  if (ReadFile(proc_dir + "/stat", stat)) {
    // Fields after the command (which may hold spaces and parentheses): from the last ')'.
    const size_t close = stat.rfind(')');
    if (close != std::string::npos) {
      std::istringstream fields(stat.substr(close + 2));
      std::vector<std::string> f;
      std::string field;
      while (fields >> field) f.push_back(field);
      // f[0] is field 3 (state): field N is f[N - 3].
      if (f.size() > 21) {
        const double utime = std::stod(f[14 - 3]);
        const double stime = std::stod(f[15 - 3]);
        const double threads = std::stod(f[20 - 3]);
        const double start_ticks = std::stod(f[22 - 3]);
        const double vsize = std::stod(f[23 - 3]);
        const double rss_pages = std::stod(f[24 - 3]);
        AddFamily(out, "process_cpu_seconds_total",
                  "Total user and system CPU time spent in seconds.", MetricType::Counter,
                  (utime + stime) / ticks);
        AddFamily(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
                  MetricType::Gauge, rss_pages * page_size);
        AddFamily(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                  MetricType::Gauge, vsize);
        AddFamily(out, "process_threads", "Number of OS threads in the process.", MetricType::Gauge,
                  threads);
        double boot = 0;
        if (BootTime(boot)) {
          AddFamily(out, "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
                    boot + start_ticks / ticks);
        }
      }
    }
  }

  if (DIR* dir = opendir((proc_dir + "/fd").c_str())) {
    double count = 0;
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') count++;
    }
    closedir(dir);
    count -= 1;  // the descriptor opendir itself holds
    AddFamily(out, "process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
              count);
  }

  std::string limits;
  if (ReadFile(proc_dir + "/limits", limits)) {
    std::istringstream lines(limits);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind("Max open files", 0) != 0) continue;
      std::istringstream fields(line.substr(sizeof("Max open files") - 1));
      std::string soft;
      fields >> soft;
      if (soft != "unlimited") {
        AddFamily(out, "process_max_fds", "Maximum number of open file descriptors.",
                  MetricType::Gauge, std::stod(soft));
      }
    }
  }
  return out;
}

}  // namespace qpool::metrics
