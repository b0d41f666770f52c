// What perf measures, per kind of operation (read, write, copy), as fio does: operations, bytes,
// and three latencies (slat: in submit, building and queueing the request; clat: from there to
// its completion; lat: both) as histograms that percentiles are read from.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace blkcopy::tools {

// Latencies in nanoseconds, log-linear: 16 buckets per power of two (about 6% wide).
class Histogram {
 public:
  void add(uint64_t ns) {
    ++n_[index(ns)];
    sum_ += ns;
    sum_squares_ += double(ns) * double(ns);
    min_ = std::min(min_, ns);
    max_ = std::max(max_, ns);
    ++count_;
  }
  void merge(const Histogram& o) {
    for (size_t i = 0; i < n_.size(); ++i) n_[i] += o.n_[i];
    sum_ += o.sum_;
    sum_squares_ += o.sum_squares_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
    count_ += o.count_;
  }
  uint64_t count() const { return count_; }
  double mean_ns() const { return count_ ? double(sum_) / double(count_) : 0; }
  double stddev_ns() const {
    if (count_ < 2) return 0;
    const double m = mean_ns();
    return std::sqrt(std::max(0.0, sum_squares_ / double(count_) - m * m));
  }
  uint64_t min_ns() const { return count_ ? min_ : 0; }
  uint64_t max_ns() const { return max_; }
  // The upper edge of the bucket holding the p-th fraction (0-1) of samples, at most the max.
  uint64_t percentile_ns(double p) const {
    const uint64_t want = std::max<uint64_t>(1, uint64_t(std::ceil(p * double(count_))));
    uint64_t seen = 0;
    for (size_t i = 0; i < n_.size(); ++i) {
      seen += n_[i];
      if (seen >= want) return std::min(upper(i), max_);
    }
    return max_;
  }

 private:
  static size_t index(uint64_t ns) {
    if (ns < 16) return ns;
    const unsigned e = 63 - unsigned(std::countl_zero(ns));  // >= 4
    return (e - 3) * 16 + ((ns >> (e - 4)) & 15);
  }
  static uint64_t upper(size_t i) {
    if (i < 16) return i;
    const size_t e = i / 16 + 3, sub = i % 16;
    return ((16 + sub + 1) << (e - 4)) - 1;
  }
  std::array<uint64_t, 61 * 16> n_{};
  uint64_t sum_ = 0, max_ = 0, count_ = 0, min_ = std::numeric_limits<uint64_t>::max();
  double sum_squares_ = 0;
};

// One kind of operation's figures.
struct OpStats {
  uint64_t ops = 0, bytes = 0;
  Histogram slat, clat, lat;

  void add(uint64_t n, uint64_t slat_ns, uint64_t clat_ns) {
    ++ops;
    bytes += n;
    slat.add(slat_ns);
    clat.add(clat_ns);
    lat.add(slat_ns + clat_ns);
  }
  void merge(const OpStats& o) {
    ops += o.ops;
    bytes += o.bytes;
    slat.merge(o.slat);
    clat.merge(o.clat);
    lat.merge(o.lat);
  }
};

}  // namespace blkcopy::tools
