// perf's report: text or JSON, per kind of operation (read, write, copy) and for all of them,
// with the percentiles asked for. The JSON keeps perf's own flat keys and adds fio's layout
// where the idea is fio's: "jobs": [{"jobname", "job_runtime", and per kind ("read", "write",
// "copy") total_ios, io_bytes, io_kbytes, bw_bytes, bw (KiB/s), iops, runtime, slat_ns, clat_ns
// and lat_ns with "percentile": {"99.000000": ns}}].
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

// "50,99,99.9" or fio's "50:99:99.9": at most 20 different values in (0, 100] (as fio's six
// decimals write them); nullopt otherwise.
std::optional<std::vector<double>> parse_percentiles(const std::string& list);

uint64_t report_ops(const JobResult& sum);  // operations of every kind
nlohmann::ordered_json perf_json(const PerfReport& r);
void print_perf_text(const PerfReport& r);

}  // namespace blkcopy::tools
