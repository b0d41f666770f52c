#include "nvme/status.h"

#include <cerrno>

namespace blkcopy::nvme {

uint16_t status_for_io_error(const Status& s, bool read) {
  if (s.ok()) return 0;
  if (s.code() == EROFS) return cqe_status(status::kReadOnlyRange, true);
  if (s.code() == ERANGE) return cqe_status(status::kLbaOutOfRange, true);
  if (s.code() == EOPNOTSUPP) return cqe_status(status::kInvalidOpcode, true);
  if (s.code() == EINVAL) return cqe_status(status::kInvalidField, true);
  // A media error may be transient: no DNR.
  return cqe_status(read ? status::kUnrecoveredRead : status::kWriteFault, false);
}

uint16_t status_for_invalid_copy(const Status& s) {
  switch (s.code()) {
    case ERANGE: return cqe_status(status::kLbaOutOfRange, true);
    case EINVAL: return cqe_status(status::kOverlappingRange, true);
    case EROFS: return cqe_status(status::kReadOnlyRange, true);
    default: return cqe_status(status::kInternal, true);
  }
}

std::string status_text(uint16_t code) {
  switch (code) {
    case status::kInvalidOpcode: return "Invalid Opcode";
    case status::kInvalidField: return "Invalid Field";
    case status::kCommandSequenceError: return "Command Sequence Error";
    case status::kInvalidNamespace: return "Invalid Namespace";
    case status::kSglLengthInvalid: return "Data SGL Length Invalid";
    case status::kInternal: return "Internal Error";
    case status::kLbaOutOfRange: return "LBA Out of Range";
    case status::kReadOnlyRange: return "Attempted Write to Read Only Range";
    case status::kCommandSizeLimit: return "Command Size Limit Exceeded";
    case status::kIncompatibleNamespace: return "Incompatible Namespace";
    case status::kOverlappingRange: return "Overlapping Range";
    case status::kAuthRequired: return "Authentication Required";
    case status::kWriteFault: return "Write Fault";
    case status::kUnrecoveredRead: return "Unrecovered Read Error";
    default: return "error";
  }
}

int errno_for_status(uint16_t code) {
  switch (code) {
    case status::kSuccess: return 0;
    case status::kLbaOutOfRange: return ERANGE;
    case status::kReadOnlyRange: return EROFS;
    case status::kAuthRequired: return EACCES;
    case status::kInvalidOpcode: return EOPNOTSUPP;
    case status::kInvalidField:
    case status::kCommandSizeLimit:
    case status::kOverlappingRange: return EINVAL;
    default: return EIO;
  }
}

bool copy_not_supported(uint16_t code) {
  return code == status::kInvalidOpcode || code == status::kIncompatibleNamespace;
}

}  // namespace blkcopy::nvme
