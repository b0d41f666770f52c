#include "nvme/target/ops.h"

#include "nvme/codec.h"

namespace blkcopy::nvme {
namespace {

const Operation kAdminOps[] = {
    {admin::kGetLogPage, kCsupp, &get_log_page},
    {admin::kIdentify, kCsupp, &identify},
    {admin::kAbort, kCsupp, &abort_command},
    {admin::kSetFeatures, kCsupp, &features},
    {admin::kGetFeatures, kCsupp, &features},
    {admin::kAsyncEvent, kCsupp, &async_event},
    {admin::kKeepAlive, kCsupp, &keep_alive},
};

// Every command that writes the namespace changes its logical block content (LBCC).
const Operation kIoOps[] = {
    {io::kFlush, kCsupp, &flush},
    {io::kWrite, kCsupp | kLbcc, &read_write},
    {io::kRead, kCsupp, &read_write},
    {io::kWriteZeroes, kCsupp | kLbcc, &write_zeroes},
    {io::kDsm, kCsupp | kLbcc, &dataset_management},
    {io::kCopy, kCsupp | kLbcc, &copy},
};

}  // namespace

const Operation* find_operation(bool admin, uint8_t opcode) {
  for (const Operation& op : admin ? std::span<const Operation>(kAdminOps)
                                   : std::span<const Operation>(kIoOps)) {
    if (op.opcode == opcode) return &op;
  }
  return nullptr;
}

void fill_effects_log(std::span<uint8_t> page) {
  std::fill(page.begin(), page.end(), 0);
  for (const Operation& op : kAdminOps) put<uint32_t>(page, op.opcode * 4u, op.effects);
  for (const Operation& op : kIoOps) put<uint32_t>(page, 1024 + op.opcode * 4u, op.effects);
}

}  // namespace blkcopy::nvme
