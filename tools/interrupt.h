// SIGINT and SIGTERM during a long copy or hydration: like dd, blkcopy reports the exact
// progress (text or JSON) before it exits, with 128 + the signal number.
#pragma once

#include <atomic>

namespace blkcopy::tools {

// From now on SIGINT and SIGTERM set the returned flag instead of ending the process (a second
// one ends it at once).
const std::atomic<bool>& catch_interrupts();
// The signal that set the flag, 0 if none.
int interrupt_signal();
// 128 + the signal, as a shell reports a process ended by it.
inline int interrupted_exit_code() { return 128 + interrupt_signal(); }

}  // namespace blkcopy::tools
