// The commands the controller serves, as data: one table for admin and one for I/O commands
// drive both dispatch and the Commands Supported and Effects log (nvmet's parse functions and
// req->execute, SPDK's command handlers). The handlers live in fabrics.cc, admin.cc, io.cc and
// copy.cc; each runs its request and ends in TargetQueue::complete().
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>

#include "nvme/target/queue.h"

namespace blkcopy::nvme {

// Commands Supported and Effects bits (NVMe base specification, log page 05h).
inline constexpr uint32_t kCsupp = 1u << 0, kLbcc = 1u << 1;

struct Operation {
  uint8_t opcode;
  uint32_t effects;
  Handler run;
};

// The entry for an opcode on an admin (or I/O) queue; nullptr when it is not served.
const Operation* find_operation(bool admin, uint8_t opcode);
// The Commands Supported and Effects log page (4096 bytes) from the tables.
void fill_effects_log(std::span<uint8_t> page);

// Ends r successfully with its data buffer going back to the host: the first `len` bytes as the
// command filled them, the rest zeroes (a recycled buffer must not carry an earlier command's
// data to this host).
inline void complete_with_data(TargetRequest& r, uint32_t len) {
  if (len < r.data_len) std::memset(r.data + len, 0, r.data_len - len);
  r.c2h = r.data_len;
  r.queue->complete(r, 0);
}

// Fabrics commands (fabrics.cc): Connect, Property Get/Set, Authentication Send/Receive.
void run_fabrics(TargetRequest& r);

// Admin commands (admin.cc).
void get_log_page(TargetRequest& r);
void identify(TargetRequest& r);
void abort_command(TargetRequest& r);
void features(TargetRequest& r);
void async_event(TargetRequest& r);
// An admin queue completes one held Asynchronous Event Request per event that waits.
void send_waiting_events(TargetQueue& q);
void keep_alive(TargetRequest& r);

// I/O commands (io.cc, copy.cc).
void read_write(TargetRequest& r);
void flush(TargetRequest& r);
void write_zeroes(TargetRequest& r);
void dataset_management(TargetRequest& r);
void copy(TargetRequest& r);

}  // namespace blkcopy::nvme
