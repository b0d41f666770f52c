#include "tools/interrupt.h"

#include <csignal>

namespace blkcopy::tools {
namespace {

std::atomic<bool> g_flag{false};
std::atomic<int> g_signal{0};

void on_signal(int sig) {
  if (g_flag.exchange(true)) {  // the second: the user means it
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_signal = sig;
}

}  // namespace

const std::atomic<bool>& catch_interrupts() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  return g_flag;
}

int interrupt_signal() { return g_signal.load(); }

}  // namespace blkcopy::tools
