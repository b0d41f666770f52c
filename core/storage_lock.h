// An exclusive lock on a device's storage against other processes (flock on its descriptor),
// for owners that keep state on the storage (a clone's region bitmap). The lock lasts as long as
// the open file description; closing the device releases it.
#pragma once

#include <blkcopy/status.h>

#include <string_view>

namespace blkcopy {

// Locks fd (what: the device's name, for the message) or fails with EBUSY naming the process
// that holds it when /proc/locks tells (pid and command line).
Status lock_storage_exclusive(int fd, std::string_view what);

}  // namespace blkcopy
