// NVMe completion statuses and errno values, both ways, in one place: the target answers a
// device's errno with a status, the host turns a status back into an errno, and both name a
// status the same way.
#pragma once

#include <blkcopy/status.h>

#include <cstdint>
#include <string>

#include "nvme/spec.h"

namespace blkcopy::nvme {

// The status field of a CQE as the wire carries it: (code << 1) with DNR, for a device's
// failure of a read or a write (or a Copy, which writes). 0 for success. A device's EOPNOTSUPP
// (it does not do the operation) is Invalid Opcode and EINVAL Invalid Field, both with DNR: a
// host must not retry them; a media error may be transient and goes without.
uint16_t status_for_io_error(const Status& s, bool read);
// The status field for a Copy that the copy engine refused before moving any data.
uint16_t status_for_invalid_copy(const Status& s);

// "LBA Out of Range", ..., for (SCT << 8) | SC.
std::string status_text(uint16_t code);
// The errno a status means to a host: ERANGE for LBA Out of Range, EROFS, EACCES for
// authentication, EOPNOTSUPP for Invalid Opcode (the controller does not do the command),
// EINVAL for a command the controller calls malformed (Invalid Field, Command Size Limit,
// Overlapping Range), EIO otherwise.
int errno_for_status(uint16_t code);
// A Copy answered with this status was not offloaded and may be emulated: the controller has
// no Copy (Invalid Opcode) or cannot copy between these namespaces (Incompatible Namespace or
// Format). Any other failure is the copy's.
bool copy_not_supported(uint16_t code);

}  // namespace blkcopy::nvme
