// Opening devices from device strings:
//   PATH or file:PATH[,ro][,buffered][,nocopy]      a regular file or a block device
//   mem:SIZE[,block=N][,copy_max=N][,segment_max=N][,max_segments=N][,nocopy][,nodata][,ro]
//          [,latency=T][,jitter=T][,bw=BYTES_PER_S][,seed=N][,fail=OP:N[:ERROR][:every]]
#pragma once

#include <blkcopy/device.h>

#include <memory>
#include <string_view>

namespace blkcopy {

struct OpenOptions {
  bool read_only = false;  // open the device read-only whatever the string says
};

Result<std::unique_ptr<Device>> open_device(EventLoop& loop, std::string_view spec,
                                            const OpenOptions& options = {});

}  // namespace blkcopy
