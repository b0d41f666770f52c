// How the tools show devices and copy results: text for people, JSON for scripts.
#pragma once

#include <blkcopy/copy.h>
#include <blkcopy/device.h>

#include <nlohmann/json.hpp>
#include <string>

namespace blkcopy::tools {

nlohmann::ordered_json info_json(const Device& dev);
std::string info_text(const Device& dev);

nlohmann::ordered_json result_json(const CopyResult& r);
std::string result_text(const CopyResult& r);

// CPU seconds (user + system) this process used, helper threads included.
// Seconds rounded to the microsecond, for JSON (0.054315, not 0.054314999999999995).
double microseconds(double seconds);
double process_cpu_seconds();

// A one-line progress bar on stderr, redrawn at most ten times a second. Unless forced, it
// appears only once a copy has run for half a second: short copies print just the summary.
class ProgressBar {
 public:
  ProgressBar(bool enabled, bool forced);
  void update(uint64_t done, uint64_t total);
  void finish();

 private:
  bool enabled_;
  bool forced_;
  bool drawn_ = false;
  double started_ = -1, last_ = -1;
};

}  // namespace blkcopy::tools
