// systemd's readiness protocol, by hand (sd_notify(3)): a datagram to $NOTIFY_SOCKET, when the
// service manager set one ("@name" is an abstract socket). Nothing happens without it.
#pragma once

#include <string>

namespace blkcopy::tools {

// "READY=1\nSTATUS=...", "STOPPING=1". False when there is a socket and the send failed.
bool sd_notify(const std::string& state);

}  // namespace blkcopy::tools
