// perf's report: text or JSON, per kind of operation (read, write, copy) and for all of them,
// with the percentiles asked for. The JSON keeps perf's own flat keys and adds fio's per-kind
// objects ("read", "write", "copy": total_ios, io_bytes, bw_bytes, iops, runtime, slat_ns,
// clat_ns and lat_ns with "percentile": {"99.000000": ns}) where the idea is fio's.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "tools/perf_job.h"

namespace blkcopy::tools {

struct PerfReport {
  const PerfArgs& args;
  uint64_t bs, copy_len;
  double seconds, cpu_seconds;
  const JobResult& sum;
  const std::vector<double>& percentiles;  // in percent, (0, 100]
};

// "50,99,99.9" or fio's "50:99:99.9": at most 20 values in (0, 100]; nullopt otherwise.
std::optional<std::vector<double>> parse_percentiles(const std::string& list);

nlohmann::ordered_json perf_json(const PerfReport& r);
void print_perf_text(const PerfReport& r);

}  // namespace blkcopy::tools
