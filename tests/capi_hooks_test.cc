// The C API's options that grow, progress, cancel and log sink (issue 19, item 8).
#include <blkcopy/blkcopy.h>
#include <blkcopy/log.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace blkcopy {
namespace {

constexpr uint64_t kMiB = 1 << 20;

struct Dev {
  blkcopy_device* d = nullptr;
  explicit Dev(const std::string& spec) { EXPECT_EQ(blkcopy_open(spec.c_str(), &d), 0) << spec; }
  ~Dev() { blkcopy_close(d); }
  test::Bytes read(uint64_t offset, uint64_t len) const {
    test::Bytes b(len);
    EXPECT_EQ(blkcopy_read(d, offset, b.data(), len), 0);
    return b;
  }
};

// Emulated (two RAM devices share nothing), in 1 MiB chunks: many progress calls.
blkcopy_copy_options emulated() {
  blkcopy_copy_options o = BLKCOPY_COPY_OPTIONS_INIT;
  o.emulation = BLKCOPY_EMULATE_FORCE;
  o.buffer_bytes = 2 * kMiB;
  o.chunk_bytes = kMiB;
  return o;
}

TEST(CApiHooks, OptionsSayTheirSizeSoTheStructCanGrow) {
  Dev src("mem:4M,seed=3"), dst("mem:4M");
  blkcopy_copy_result r{};
  blkcopy_copy_options unset{};  // size 0: a caller that did not start from the initializer
  EXPECT_EQ(blkcopy_copy(src.d, 0, dst.d, 0, 4096, &unset, &r), -EINVAL);
  EXPECT_NE(std::strstr(r.error, "BLKCOPY_COPY_OPTIONS_INIT"), nullptr) << r.error;
  blkcopy_copy_options garbage = emulated();
  for (uint32_t size : {4u, 12u, 36u, 1u << 20}) {  // 36: half of the progress pointer
    garbage.size = size;
    EXPECT_EQ(blkcopy_copy(src.d, 0, dst.d, 0, 4096, &garbage, &r), -EINVAL) << size;
  }

  // An older caller knows only the first fields: what lies after them is not read.
  blkcopy_copy_options older = emulated();
  older.size = offsetof(blkcopy_copy_options, progress);
  older.progress = reinterpret_cast<blkcopy_progress_fn>(uintptr_t{1});  // would crash if called
  older.cancel = reinterpret_cast<blkcopy_cancel*>(uintptr_t{1});
  ASSERT_EQ(blkcopy_copy(src.d, 0, dst.d, 0, kMiB, &older, &r), 0) << r.error;
  EXPECT_EQ(r.emulated_bytes, kMiB) << "the fields it did set are used";
  EXPECT_EQ(dst.read(0, kMiB), test::pattern(0, kMiB, 3));

  // A newer caller: zero in what this library does not know is fine, anything else refused.
  struct Newer {
    blkcopy_copy_options known;
    uint64_t future;
  } newer{emulated(), 0};
  newer.known.size = sizeof newer;
  EXPECT_EQ(blkcopy_copy(src.d, kMiB, dst.d, kMiB, kMiB, &newer.known, &r), 0) << r.error;
  EXPECT_EQ(dst.read(kMiB, kMiB), test::pattern(kMiB, kMiB, 3));
  newer.future = 1;
  EXPECT_EQ(blkcopy_copy(src.d, 0, dst.d, 2 * kMiB, kMiB, &newer.known, &r), -E2BIG);
  EXPECT_NE(std::strstr(r.error, "does not know"), nullptr) << r.error;
  EXPECT_EQ(dst.read(2 * kMiB, kMiB), test::Bytes(kMiB)) << "nothing written";
}

TEST(CApiHooks, ProgressRisesToTheTotal) {
  Dev src("mem:16M,seed=4"), dst("mem:16M");
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  blkcopy_copy_options o = emulated();
  o.progress = [](void* arg, uint64_t done, uint64_t total) {
    static_cast<decltype(calls)*>(arg)->emplace_back(done, total);
  };
  o.progress_arg = &calls;
  blkcopy_copy_result r{};
  ASSERT_EQ(blkcopy_copy(src.d, 0, dst.d, 0, 16 * kMiB, &o, &r), 0) << r.error;
  ASSERT_GE(calls.size(), 4u);
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_GT(calls[i].first, calls[i - 1].first);
  EXPECT_EQ(calls.back(), std::make_pair(16 * kMiB, 16 * kMiB));
  EXPECT_EQ(dst.read(0, 16 * kMiB), test::pattern(0, 16 * kMiB, 4));
}

struct CancelFixture {
  blkcopy_cancel* cancel = blkcopy_cancel_create();
  ~CancelFixture() { blkcopy_cancel_destroy(cancel); }
};

TEST(CApiHooks, ACancelledCopyEndsWithExactProgress) {
  Dev src("mem:64M,seed=5"), dst("mem:64M");
  CancelFixture c;
  ASSERT_NE(c.cancel, nullptr);
  blkcopy_copy_options o = emulated();
  o.cancel = c.cancel;
  // Cancelled before it starts: nothing is written.
  blkcopy_cancel_request(c.cancel);
  blkcopy_copy_result r{};
  EXPECT_EQ(blkcopy_copy(src.d, 0, dst.d, 0, 32 * kMiB, &o, &r), -ECANCELED);
  EXPECT_EQ(r.bytes, 0u);
  EXPECT_EQ(dst.read(0, 32 * kMiB), test::Bytes(32 * kMiB));

  // Cancelled by its own progress callback after 8 MiB.
  blkcopy_cancel_reset(c.cancel);
  o.progress = [](void* arg, uint64_t done, uint64_t) {
    if (done >= 8 * kMiB) blkcopy_cancel_request(static_cast<blkcopy_cancel*>(arg));
  };
  o.progress_arg = c.cancel;
  EXPECT_EQ(blkcopy_copy(src.d, 0, dst.d, 0, 32 * kMiB, &o, &r), -ECANCELED);
  EXPECT_NE(std::strstr(r.error, "interrupted"), nullptr) << r.error;
  EXPECT_GE(r.bytes, 8 * kMiB);
  EXPECT_LT(r.bytes, 32 * kMiB);
  EXPECT_EQ(dst.read(0, r.bytes), test::pattern(0, r.bytes, 5)) << "the reported progress is true";
  EXPECT_EQ(dst.read(32 * kMiB, 32 * kMiB), test::Bytes(32 * kMiB)) << "nothing past the range";
}

TEST(CApiHooks, ACancelAfterEveryByteLandedIsNotAFailure) {
  Dev src("mem:8M,seed=7"), dst("mem:8M");
  CancelFixture c;
  blkcopy_copy_options o = emulated();
  o.cancel = c.cancel;
  o.progress_arg = c.cancel;
  o.progress = [](void* arg, uint64_t done, uint64_t total) {
    if (done == total) blkcopy_cancel_request(static_cast<blkcopy_cancel*>(arg));
  };
  blkcopy_copy_result r{};
  EXPECT_EQ(blkcopy_copy(src.d, 0, dst.d, 0, 8 * kMiB, &o, &r), 0) << r.error;
  EXPECT_EQ(r.bytes, 8 * kMiB);
  EXPECT_EQ(dst.read(0, 8 * kMiB), test::pattern(0, 8 * kMiB, 7));
}

// A callback that calls back in would close a device under the copy or run a copy inside it
// on the same loop (both crashed): such calls are refused.
TEST(CApiHooks, CallsFromACallbackAreRefused) {
  Dev src("mem:8M,seed=8"), dst("mem:8M");
  struct Inside {
    blkcopy_device *src, *dst;
    int close = 1, copy = 1, read = 1, open = 1;
  } in{src.d, dst.d};
  blkcopy_copy_options o = emulated();
  o.progress_arg = &in;
  o.progress = [](void* arg, uint64_t, uint64_t) {
    auto* i = static_cast<Inside*>(arg);
    i->close = blkcopy_close(i->src);
    i->copy = blkcopy_copy(i->src, 0, i->dst, 4 * kMiB, 4096, nullptr, nullptr);
    char b[512];
    i->read = blkcopy_read(i->dst, 0, b, sizeof b);
    blkcopy_device* d = nullptr;
    i->open = blkcopy_open("mem:1M", &d);
  };
  blkcopy_copy_result r{};
  ASSERT_EQ(blkcopy_copy(src.d, 0, dst.d, 0, 4 * kMiB, &o, &r), 0) << r.error;
  EXPECT_EQ(in.close, -EDEADLK);
  EXPECT_EQ(in.copy, -EDEADLK);
  EXPECT_EQ(in.read, -EDEADLK);
  EXPECT_EQ(in.open, -EDEADLK);
  EXPECT_EQ(dst.read(0, 4 * kMiB), test::pattern(0, 4 * kMiB, 8));
  EXPECT_EQ(dst.read(4 * kMiB, 4096), test::Bytes(4096)) << "the refused copy wrote nothing";
  EXPECT_NE(std::strlen(blkcopy_last_error()), 0u);
}

TEST(CApiHooks, AnotherThreadCancels) {
  Dev src("mem:64M,seed=6"), dst("mem:64M");
  CancelFixture c;
  struct Shared {
    blkcopy_cancel* cancel;
    std::atomic<bool> started{false}, requested{false};
  } shared{c.cancel};
  std::thread canceller([&] {
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!shared.started && std::chrono::steady_clock::now() < limit) std::this_thread::yield();
    blkcopy_cancel_request(shared.cancel);
    shared.requested = true;
  });
  blkcopy_copy_options o = emulated();
  o.cancel = c.cancel;
  o.progress_arg = &shared;
  o.progress = [](void* arg, uint64_t, uint64_t) {  // holds the copy until the other thread acted
    auto* s = static_cast<Shared*>(arg);
    s->started = true;
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!s->requested && std::chrono::steady_clock::now() < limit) std::this_thread::yield();
  };
  blkcopy_copy_result r{};
  EXPECT_EQ(blkcopy_copy(src.d, 0, dst.d, 0, 64 * kMiB, &o, &r), -ECANCELED);
  canceller.join();
  EXPECT_LT(r.bytes, 64 * kMiB);
  EXPECT_EQ(dst.read(0, r.bytes), test::pattern(0, r.bytes, 6));
}

TEST(CApiHooks, ALogSinkGetsEscapedLinesAtItsLevel) {
  struct Seen {
    std::vector<std::pair<int, std::string>> lines;
  } seen;
  auto sink = [](void* arg, int level, const char* message) {
    static_cast<Seen*>(arg)->lines.emplace_back(level, message);
  };
  EXPECT_EQ(blkcopy_set_log(sink, &seen, 7), -EINVAL);
  EXPECT_EQ(blkcopy_set_log(sink, &seen, -1), -EINVAL);
  ASSERT_EQ(blkcopy_set_log(sink, &seen, BLKCOPY_LOG_WARNING), 0);
  log_warning("host nqn.x\nforged line");
  log_info("below the level");
  ASSERT_EQ(seen.lines.size(), 1u);
  EXPECT_EQ(seen.lines[0].first, BLKCOPY_LOG_WARNING);
  EXPECT_EQ(seen.lines[0].second, "host nqn.x\\x0aforged line");
  // Setting the log from inside the log callback would take its lock twice (it hung).
  struct Again {
    int rc = 1;
  } again;
  ASSERT_EQ(blkcopy_set_log([](void* arg, int, const char*) {
              static_cast<Again*>(arg)->rc = blkcopy_set_log(nullptr, nullptr, 0);
            }, &again, BLKCOPY_LOG_ERROR), 0);
  log_error("set the log from here");
  EXPECT_EQ(again.rc, -EDEADLK);
  ASSERT_EQ(blkcopy_set_log(nullptr, nullptr, BLKCOPY_LOG_ERROR), 0);
  log_error("nobody listens");
  EXPECT_EQ(seen.lines.size(), 1u);
}

}  // namespace
}  // namespace blkcopy
