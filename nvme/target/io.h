// How a request reaches its devices (io.cc): on the queue's own loop through the namespaces'
// channels, or, where a device has no channel there, by a hop to the target's first loop and
// back. Device work counts as in flight on the queue until it is back.
#pragma once

#include "nvme/target/request.h"

namespace blkcopy::nvme {

using Stage = void (*)(TargetRequest& r);

// Runs start(r) on the loop whose devices r uses (r.dev_worker: the queue's, or 0 after a hop
// when !channels_here); start's device work ends with from_devices().
void to_devices(TargetRequest& r, bool channels_here, Stage start);
// Brings r back to its queue's loop and runs finish(r) there.
void from_devices(TargetRequest& r, Stage finish);

}  // namespace blkcopy::nvme
