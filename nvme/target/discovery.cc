// The discovery log page: an entry per port and subsystem the host may reach.
#include "nvme/codec.h"
#include "nvme/target/internal.h"

namespace blkcopy::nvme {

std::vector<uint8_t> TargetImpl::discovery_log(const std::string& host,
                                               const std::string& local_addr, const Port* via) const {
  std::vector<std::vector<uint8_t>> entries;
  std::lock_guard lock(ports_mu_);
  const bool one_port = via && via->cfg.id != 0;  // port ID 0 is the discovery port
  for (const auto& port : ports_) {
    if (one_port && port.get() != via) continue;
    const PortConfig& p = port->cfg;
    // A port listening everywhere is announced at the address this host reached.
    const bool wildcard = p.addr == "0.0.0.0" || p.addr == "::";
    const std::string addr = wildcard ? local_addr : p.addr;
    for (const std::string& nqn : p.subsystems) {
      auto sub = subsystems_.find(nqn);
      if (!sub || !sub->allows(host)) continue;
      std::vector<uint8_t> e(kDiscEntrySize, 0);
      std::span<uint8_t> s(e);
      e[disc::kTrtype] = 3;  // TCP
      e[disc::kAdrfam] = addr.find(':') != std::string::npos ? 2 : 1;  // IPv6 : IPv4
      e[disc::kSubtype] = 2;
      // TREQ bits 1:0 say whether a secure channel is required (01b) or not (10b), TSAS's
      // SECTYPE which one (02h: TLS 1.3); a port without TLS leaves both 0 as Linux nvmet does.
      e[disc::kTreq] = p.tls == PortTls::required ? 1 : p.tls == PortTls::optional ? 2 : 0;
      e[disc::kTsas] = p.tls == PortTls::none ? 0 : 2;
      put<uint16_t>(s, disc::kPortid, p.id);
      put<uint16_t>(s, disc::kCntlid, 0xFFFF);
      put<uint16_t>(s, disc::kAsqsz, 32);
      put_string(s, disc::kTrsvcid, 32, std::to_string(port->bound), ' ');
      put_string(s, disc::kSubnqn, 256, nqn, '\0');
      put_string(s, disc::kTraddr, 256, addr, ' ');
      entries.push_back(std::move(e));
    }
  }
  std::vector<uint8_t> log(kDiscHeaderSize + entries.size() * kDiscEntrySize, 0);
  std::span<uint8_t> s(log);
  put<uint64_t>(s, 0, discovery_generation_.load());  // GENCTR: changes with ports and subsystems
  put<uint64_t>(s, 8, entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    std::memcpy(log.data() + kDiscHeaderSize + i * kDiscEntrySize, entries[i].data(), kDiscEntrySize);
  }
  return log;
}

}  // namespace blkcopy::nvme
