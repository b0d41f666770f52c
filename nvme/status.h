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
// failure of a read or a write (or a Copy, which writes). 0 for success.
uint16_t status_for_io_error(const Status& s, bool read);
// The status field for a Copy that the copy engine refused before moving any data.
uint16_t status_for_invalid_copy(const Status& s);

// "LBA Out of Range", ..., for (SCT << 8) | SC.
std::string status_text(uint16_t code);
// The errno a status means to a host: ERANGE for LBA Out of Range, EROFS, EACCES for
// authentication, and for a Copy (copy = true) EOPNOTSUPP where the controller cannot take
// it, so that the engine emulates; EIO otherwise.
int errno_for_status(uint16_t code, bool copy);

}  // namespace blkcopy::nvme
