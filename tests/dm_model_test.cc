// Randomised model test over random stacks: depth 1 to 3, linear, striped and zero targets, mem
// children with and without copy support and with different limits. The test keeps its own
// model of every table, independent of the driver's mapping code: it computes the original
// contents of the stack from the mem devices' seeds, and for every copy which bytes must be
// offloaded (both legs reach one mem device through the same children, and every device in the
// stack can offload) and which must be emulated. Reads, writes and copies are checked against
// the model after each step.
//
// BLKCOPY_DM_SEED=N reruns one seed (BLKCOPY_DM_TRACE=1 prints its tables);
// BLKCOPY_DM_ROUNDS=N runs N seeds.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "drivers/mem/mem_device.h"
#include "stack/table.h"
#include "tests/test_util.h"

namespace blkcopy {
namespace {

using test::Bytes;
constexpr uint64_t K = 1024, B = 512;

struct Node;
struct Leg {
  Node* child;
  uint64_t offset;  // bytes
};
struct ModelTarget {
  enum Kind { linear, striped, zero } kind;
  uint64_t start, length, chunk = 0;
  std::vector<Leg> legs;
};
struct Node {
  bool mem = true;
  uint64_t seed = 0, size = 0, used = 0;
  bool copy = true;
  std::string spec;
  std::vector<ModelTarget> targets;
  bool can_offload() const {
    if (mem) return copy;
    bool any = false;  // a table of zero targets only has nothing to offload onto
    for (const auto& t : targets) {
      for (const Leg& l : t.legs) {
        if (!l.child->can_offload()) return false;
        any = true;
      }
    }
    return any;
  }
};

// Where byte `off` of `n` lives one level down: (child, offset), or child nullptr for zero.
Leg step(const Node& n, uint64_t off) {
  for (const ModelTarget& t : n.targets) {
    if (off < t.start || off >= t.start + t.length) continue;
    const uint64_t rel = off - t.start;
    if (t.kind == ModelTarget::zero) return {nullptr, 0};
    if (t.kind == ModelTarget::linear) return {t.legs[0].child, t.legs[0].offset + rel};
    const uint64_t c = rel / t.chunk, stripes = t.legs.size();
    const Leg& l = t.legs[c % stripes];
    return {l.child, l.offset + (c / stripes) * t.chunk + rel % t.chunk};
  }
  ADD_FAILURE() << "offset beyond the model";
  return {nullptr, 0};
}

Leg bottom(const Node* n, uint64_t off) {
  while (n && !n->mem) {
    Leg l = step(*n, off);
    n = l.child;
    off = l.offset;
  }
  return {const_cast<Node*>(n), off};
}

// Both legs travel through the same children down to one mem device.
bool same_path(const Node* n, uint64_t s, uint64_t d) {
  while (!n->mem) {
    Leg a = step(*n, s), b = step(*n, d);
    if (!a.child || a.child != b.child) return false;
    n = a.child;
    s = a.offset;
    d = b.offset;
  }
  return true;
}

class StackBuilder {
 public:
  StackBuilder(uint64_t seed, const std::filesystem::path& dir) : rng_(seed), dir_(dir) {}

  Node* table(int depth) {
    Node* n = make();
    n->mem = false;
    n->spec = "dm:" + (dir_ / ("t" + std::to_string(nodes_.size()) + ".table")).string();
    std::vector<Node*> pool;  // this table's mem children, which targets may share
    std::string text;
    uint64_t at = 0;
    const int count = pick(1, 3);
    for (int i = 0; i < count; ++i) {
      ModelTarget t{};
      t.start = at;
      const int kind = pick(0, 9);
      if (kind < 5 || (i == 0 && count == 1)) {
        t.kind = ModelTarget::linear;
        t.length = 4 * K * pick(4, 64);
        t.legs.push_back(leg(depth, t.length, pool));
        text += line(t, "linear " + t.legs[0].child->spec + " " + std::to_string(t.legs[0].offset / B));
      } else if (kind < 8) {
        t.kind = ModelTarget::striped;
        const uint64_t stripes = pick(2, 4);
        t.chunk = 4 * K * pick(1, 4);
        t.length = stripes * t.chunk * pick(1, 6);
        std::string args = std::to_string(stripes) + " " + std::to_string(t.chunk / B);
        for (uint64_t s = 0; s < stripes; ++s) {
          t.legs.push_back(leg(depth, t.length / stripes, pool));
          args += " " + t.legs.back().child->spec + " " + std::to_string(t.legs.back().offset / B);
        }
        text += line(t, "striped " + args);
      } else {
        t.kind = ModelTarget::zero;
        t.length = 4 * K * pick(1, 16);
        text += line(t, "zero");
      }
      at += t.length;
      n->targets.push_back(t);
    }
    n->size = at;
    std::ofstream(n->spec.substr(3)) << text;
    return n;
  }

  uint64_t pick(uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }

 private:
  Node* make() {
    nodes_.push_back(std::make_unique<Node>());
    return nodes_.back().get();
  }
  static std::string line(const ModelTarget& t, const std::string& rest) {
    return std::to_string(t.start / B) + " " + std::to_string(t.length / B) + " " + rest + "\n";
  }
  Leg leg(int depth, uint64_t bytes, std::vector<Node*>& pool) {
    if (depth > 1 && pick(0, 2) == 0) {
      Node* c = table(depth - 1);
      while (c->size < bytes) c = table(depth - 1);  // a lower table big enough
      return {c, 0};
    }
    for (Node* m : pool) {  // share a mem device with an earlier target of this table
      if (m->used + bytes <= m->size && pick(0, 1)) {
        m->used += bytes;
        return {m, m->used - bytes};
      }
    }
    Node* m = make();
    m->seed = nodes_.size() * 7919 + pick(1, 1000);
    m->size = std::max<uint64_t>(bytes, 512 * K);
    m->copy = pick(0, 9) != 0;
    m->used = bytes;
    m->spec = "mem:" + std::to_string(m->size) + ",seed=" + std::to_string(m->seed);
    if (!m->copy) m->spec += ",nocopy";
    const uint64_t caps[] = {4 * K, 16 * K, 64 * K, 256u << 20};
    m->spec += ",copy_max=" + std::to_string(caps[pick(0, 3)]);
    m->spec += ",segment_max=" + std::to_string(caps[pick(0, 2)]);
    m->spec += ",max_segments=" + std::to_string(pick(0, 1) ? 1 : pick(2, 256));
    if (pick(0, 2) == 0) m->spec += ",jitter=" + std::to_string(pick(1, 100)) + "us";
    pool.push_back(m);
    return {m, 0};
  }

  std::mt19937_64 rng_;
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

// The model's view of the whole stacked device, block by block.
Bytes model_contents(const Node& top) {
  Bytes b(top.size);
  for (uint64_t off = 0; off < top.size; off += B) {
    Leg l = bottom(&top, off);
    if (l.child) fill_pattern(b.data() + off, l.offset, B, l.child->seed);
  }
  return b;
}

// Writes to zero targets vanish: the model zeroes those blocks again.
void rezero(const Node& top, Bytes& ref) {
  for (uint64_t off = 0; off < top.size; off += B) {
    if (!bottom(&top, off).child) std::memset(ref.data() + off, 0, B);
  }
}

void run_seed(uint64_t seed) {
  auto loop = test::make_loop();
  test::TempDir dir;
  StackBuilder sb(seed, dir.path());
  Node* top = sb.table(static_cast<int>(sb.pick(1, 3)));
  auto dev = test::open_dev(*loop, top->spec);
  ASSERT_TRUE(dev);
  ASSERT_EQ(dev->limits().capacity, top->size);
  if (std::getenv("BLKCOPY_DM_TRACE")) {
    std::system(("head -50 " + dir.path().string() + "/*.table >&2").c_str());
  }
  ASSERT_EQ(dev->limits().can_offload(), top->can_offload());
  Bytes ref = model_contents(*top);
  ASSERT_EQ(test::read_bytes(*dev, 0, top->size), ref) << "initial contents";

  const uint64_t blocks = top->size / B;
  for (int step = 0; step < 10; ++step) {
    SCOPED_TRACE(testing::Message() << "step " << step);
    if (sb.pick(0, 3) == 0) {  // a write across targets
      const uint64_t len = B * sb.pick(1, std::min<uint64_t>(blocks, 64));
      const uint64_t off = B * sb.pick(0, blocks - len / B);
      Bytes data = test::pattern(off, len, 1000 + seed * 31 + step);
      test::write_bytes(*dev, off, data);
      std::memcpy(ref.data() + off, data.data(), len);
    } else {
      const int nsrc = sb.pick(0, 2) == 0 ? static_cast<int>(sb.pick(2, 4)) : 1;
      std::vector<CopySegment> srcs;
      uint64_t total = 0;
      for (int i = 0; i < nsrc; ++i) {
        const uint64_t len = B * sb.pick(1, std::max<uint64_t>(1, blocks / (3 * nsrc)));
        srcs.push_back({dev.get(), B * sb.pick(0, blocks - len / B), len});
        total += len;
      }
      const uint64_t dst = B * sb.pick(0, blocks - total / B);
      bool overlaps = false;
      for (auto& s : srcs) overlaps |= s.offset < dst + total && dst < s.offset + s.length;
      if (overlaps && nsrc > 1) continue;  // rejected by design (engine_test)
      CopyOptions o;
      o.emulation = sb.pick(0, 4) == 0 ? Emulation::force : Emulation::allow;
      o.chunk_bytes = B * sb.pick(1, 64);
      o.buffer_bytes = o.chunk_bytes * sb.pick(1, 8);
      // The model's expectation, from the ORIGINAL contents.
      Bytes gathered;
      uint64_t must_offload = 0, p = 0;
      for (auto& s : srcs) {
        gathered.insert(gathered.end(), ref.begin() + s.offset, ref.begin() + s.offset + s.length);
        for (uint64_t b = 0; b < s.length; b += B, p += B) {
          if (top->can_offload() && same_path(top, s.offset + b, dst + p)) must_offload += B;
        }
      }
      if (o.emulation == Emulation::force) must_offload = 0;
      const bool onto_itself = nsrc == 1 && srcs[0].offset == dst;  // nothing to move
      CopyResult r = copy_ranges(srcs, *dev, dst, o);
      ASSERT_TRUE(r.status.ok()) << r.status.code() << " " << r.status.message();
      ASSERT_EQ(r.bytes, total);
      if (onto_itself) {
        EXPECT_EQ(r.offloaded_bytes + r.emulated_bytes, 0u);
      } else {
        EXPECT_EQ(r.offloaded_bytes, must_offload)
            << "pieces landing on one copy-capable child must be offloaded, the others emulated";
        EXPECT_EQ(r.emulated_bytes, total - must_offload);
      }
      std::memcpy(ref.data() + dst, gathered.data(), total);
    }
    rezero(*top, ref);
    const Bytes got = test::read_bytes(*dev, 0, top->size);
    for (uint64_t off = 0; off < top->size; off += B) {
      ASSERT_EQ(std::memcmp(got.data() + off, ref.data() + off, B), 0)
          << "block at " << off << " differs from the model";
    }
  }
}

uint64_t env_rounds() {
  const char* v = std::getenv("BLKCOPY_DM_ROUNDS");
  return v ? std::strtoull(v, nullptr, 0) : 300;
}

TEST(DmModelTest, RandomStacksMatchTheModel) {
  const char* one = std::getenv("BLKCOPY_DM_SEED");
  const uint64_t first = one ? std::strtoull(one, nullptr, 0) : 1;
  const uint64_t last = one ? first : first + env_rounds() - 1;
  for (uint64_t seed = first; seed <= last; ++seed) {
    SCOPED_TRACE(testing::Message() << "BLKCOPY_DM_SEED=" << seed);
    run_seed(seed);
    if (testing::Test::HasFailure()) return;
  }
}

}  // namespace
}  // namespace blkcopy
