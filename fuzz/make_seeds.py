#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target into fuzz/corpus/TARGET/ (run from anywhere).

The seeds are whole, valid inputs (an NVMe/TCP session, copy range lists, configurations,
tables, device strings) from which the fuzzers mutate; they are also what ctest replays."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SUB = b"nqn.2024-01.io.blkcopy:fuzz"
HOST = b"nqn.2024-01.io.blkcopy:fuzz-host"


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


class Session:
    def __init__(self, hdgst=False, ddgst=False):
        self.hd, self.dd = hdgst, ddgst
        self.out = bytearray(struct.pack("<BBBBIHBBI", 0, 0, 128, 0, 128, 0, 0, (1 if hdgst else 0) | (2 if ddgst else 0), 0))
        self.out += bytes(128 - len(self.out))
        self.cid = 0

    def pdu(self, ptype, hlen, header, data=b""):
        hd = 4 if self.hd else 0
        dd = 4 if self.dd and data else 0
        flags = (1 if hd else 0) | (2 if dd else 0)
        pdo = hlen + hd if data else 0
        plen = hlen + hd + len(data) + dd
        head = struct.pack("<BBBBI", ptype, flags, hlen, pdo, plen) + header
        head += bytes(hlen - len(head))
        self.out += head
        if hd:
            self.out += struct.pack("<I", crc32c(head))
        self.out += data
        if dd:
            self.out += struct.pack("<I", crc32c(data))

    def command(self, opcode, nsid=0, cdw10=0, cdw11=0, cdw12=0, data=b"", length=None, in_capsule=True, raw4=None):
        self.cid += 1
        length = len(data) if length is None else length
        sgl_type = 0x01 if (data and in_capsule) or (not data and length == 0) else 0x5A
        sqe = struct.pack("<BBHI", opcode, 0x40, self.cid, nsid)
        if raw4 is not None:
            sqe = sqe[:4] + bytes([raw4]) + sqe[5:]
        sqe += bytes(16)  # cdw2, cdw3, mptr
        sqe += struct.pack("<QI3xB", 0, length, sgl_type)
        sqe += struct.pack("<IIIIII", cdw10, cdw11, cdw12, 0, 0, 0)
        self.pdu(0x04, 72, sqe, data if in_capsule else b"")
        return self.cid

    def connect(self, qid, cntlid, sqsize=31):
        data = bytearray(1024)
        struct.pack_into("<H", data, 16, cntlid)
        data[256:256 + len(SUB)] = SUB
        data[512:512 + len(HOST)] = HOST
        self.cid += 1
        sqe = struct.pack("<BBHB", 0x7F, 0x40, self.cid, 0x01) + bytes(19)
        sqe += struct.pack("<QI3xB", 0, 1024, 0x01)
        sqe += struct.pack("<HHHHI", 0, qid, sqsize, 0, 0) + bytes(12)
        self.pdu(0x04, 72, sqe, bytes(data))

    def h2c(self, cid, offset, data):
        self.pdu(0x06, 24, struct.pack("<HHII", cid, cid, offset, len(data)) + bytes(4), data)


def ranges(fmt, items):
    out = b""
    for snsid, slba, nlb in items:
        out += struct.pack("<I4xQH", snsid if fmt == 2 else 0, slba, nlb - 1) + bytes(14)
    return out


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def sessions():
    # An admin queue of its own: Property Get/Set, Identify, log pages, features, keep-alive.
    s = Session()
    s.connect(0, 0xFFFF)
    s.command(0x7F, raw4=0x04, cdw10=0)                      # Property Get (offset in SQE)
    s.command(0x06, cdw10=1, length=4096, in_capsule=False)  # Identify Controller
    s.command(0x06, nsid=1, cdw10=0, length=4096, in_capsule=False)
    s.command(0x06, cdw10=2, length=4096, in_capsule=False)
    s.command(0x06, nsid=1, cdw10=3, length=4096, in_capsule=False)
    s.command(0x02, cdw10=0x05 | (1023 << 16), length=4096, in_capsule=False)  # effects log
    s.command(0x0A, cdw10=0x07)
    s.command(0x18)
    yield "admin", bytes([255]) + bytes(s.out)
    # An I/O queue of the fuzzer's standing controller (ID 1): every I/O command.
    for hd, dd, name in ((False, False, "io"), (True, True, "io-digests")):
        s = Session(hd, dd)
        s.connect(1, 1)
        block = bytes(range(256)) * 16
        s.command(0x01, nsid=1, cdw10=8, cdw12=7, data=block)         # write in-capsule
        s.command(0x02, nsid=1, cdw10=8, cdw12=7, length=4096, in_capsule=False)
        cid = s.command(0x01, nsid=1, cdw10=64, cdw12=7, data=block, in_capsule=False)
        s.h2c(cid, 0, block)                                           # write through R2T
        s.command(0x19, nsid=1, cdw10=200, cdw12=1, data=ranges(0, [(0, 8, 8), (0, 64, 8)]))
        s.command(0x19, nsid=1, cdw10=300, cdw12=0 | (2 << 8), data=ranges(2, [(2, 0, 8)]))
        s.command(0x08, nsid=1, cdw10=400, cdw12=15)                  # write zeroes
        s.command(0x09, nsid=1, cdw10=0, cdw11=4, data=struct.pack("<IIQ", 0, 8, 500))
        s.command(0x00, nsid=1)                                        # flush
        yield name, bytes([255]) + bytes(s.out)
    # The discovery controller.
    s = Session()
    data = bytearray(1024)
    struct.pack_into("<H", data, 16, 0xFFFF)
    disc = b"nqn.2014-08.org.nvmexpress.discovery"
    data[256:256 + len(disc)] = disc
    data[512:512 + len(HOST)] = HOST
    s.cid += 1
    sqe = struct.pack("<BBHB", 0x7F, 0x40, s.cid, 0x01) + bytes(19)
    sqe += struct.pack("<QI3xB", 0, 1024, 0x01) + struct.pack("<HHHHI", 0, 0, 31, 0, 0) + bytes(12)
    s.pdu(0x04, 72, sqe, bytes(data))
    s.command(0x02, cdw10=0x70 | (255 << 16), length=1024, in_capsule=False)
    yield "discovery", bytes([16]) + bytes(s.out)


def main():
    for name, data in sessions():
        write("connection", name, data)
    write("copy_ranges", "format0", bytes([1, 0]) + ranges(0, [(0, 0, 8), (0, 100, 16)]))
    write("copy_ranges", "format2", bytes([2, 2]) + ranges(2, [(1, 0, 1), (2, 5, 65536), (3, 2**64 - 1, 2)]))
    write("nvmetcli", "plain", b"\x00" + b'''{"hosts": [{"nqn": "nqn.2024-01.io.example:h1"}],
 "ports": [{"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": "4420"},
            "subsystems": ["nqn.2024-01.io.example:s1"], "referrals": [], "param": {"pi_enable": "0"}}],
 "subsystems": [{"nqn": "nqn.2024-01.io.example:s1", "allowed_hosts": ["nqn.2024-01.io.example:h1"],
   "attr": {"allow_any_host": "0", "cntlid_min": "1", "cntlid_max": "100", "serial": "x", "model": "m", "qid_max": "4"},
   "namespaces": [{"nsid": 1, "enable": 1, "ana_grpid": 1,
                   "device": {"path": "mem:1M", "nguid": "00112233-4455-6677-8899-aabbccddeeff"}}]}]}''')
    write("nvmetcli", "ipv6-lenient", b"\x01" + b'''{"ports": [{"addr": {"adrfam": "ipv6", "traddr": "::1", "trsvcid": "4420",
 "treq": "not specified", "tsas": "none"}, "subsystems": []}], "extra": 1}''')
    write("dm_table", "linear-striped", b"0 2048 linear mem:1M 0\n2048 4096 striped 2 8 mem:1M 0 mem:1M 0\n# c\n6144 8 zero\n")
    write("dm_table", "flakey", b"0 100 flakey mem:1M 0 fail=write:2:EIO delay=read:1:10ms\n100 28 error\n")
    for i, text in enumerate([b"16M,seed=3,copy_max=64k,segment_max=16k,max_segments=4,fail=write:2:EIO:every",
                              b"/tmp/x,nocopy", b"t.table", b"//[::1]:4420/nqn.2024-01.io.x:s?ns=2&digest=header,data&kato=1000&queues=2&reconnect=3",
                              b"64KiB", b"write:3:ENOSPC", b"[::1]:4420", b"4420"]):
        write("device_string", str(i), bytes([i]) + text)
    # What a SCSI LUN answers (LIO's shapes): VPD 0x83, OPERATING PARAMETERS, sense data.
    naa = bytes([0x61, 0x03, 0, 16, 0x60, 0x01, 0x40, 0x50]) + bytes([0xA0] * 12)
    t10 = bytes([0x02, 0x01, 0, 8]) + b"LIO-ORG "
    write("scsi_proto", "vpd83", bytes([0, 0x83, 0, len(naa + t10)]) + naa + t10)
    write("scsi_proto", "operating-parameters",
          struct.pack(">IB3xHHIIII", 42, 1, 2, 1, 1024, 268435456, 0, 0) + bytes(9) + bytes([9, 9, 9]) +
          bytes(3) + bytes([2, 0x02, 0xE4]))
    write("scsi_proto", "sense-fixed", bytes([0x70, 0, 0x0A, 0, 0, 0, 0, 10, 0, 0, 0, 3, 0x0D, 0x02, 0, 0, 0, 0]))
    write("scsi_proto", "sense-descriptor", bytes([0x72, 5, 0x24, 0, 0, 0, 0, 12, 0, 10, 0x80]) + bytes(8) + bytes([42]))
    write("scsi_proto", "inquiry", bytes([0, 0, 6, 2, 31, 0, 0x08, 0]) + b"LIO-ORG FILEIO          4.0 ")
    # What a target sends the host queue (fuzz_host_queue: CIDs 1 read 16 KiB, 2 write 16 KiB,
    # 3 flush): whole answers, a SUCCESS before all the data, an R2T past the end, garbage.
    def hdr(ptype, flags, hlen, pdo, plen):
        return struct.pack("<BBBBI", ptype, flags, hlen, pdo, plen)
    def resp(cid, status=0):
        return hdr(0x05, 0, 24, 0, 24) + struct.pack("<IIHHHH", 0, 0, 0, 0, cid, status << 1)
    def c2h(cid, offset, data, flags):
        return hdr(0x07, flags, 24, 24, 24 + len(data)) + struct.pack("<HHII4x", cid, 0, offset, len(data)) + data
    def r2t(cid, offset, length):
        return hdr(0x09, 0, 24, 0, 24) + struct.pack("<HHII4x", cid, 1, offset, length)
    write("host_queue", "answers", resp(3) + c2h(1, 0, bytes(8192), 0) + c2h(1, 8192, bytes(8192), 0x0C) +
          r2t(2, 0, 16384) + resp(2))
    write("host_queue", "early-success", c2h(1, 0, bytes(4096), 0x0C) + resp(3))
    write("host_queue", "r2t-past-end", r2t(2, 8192, 16384) + resp(1, 0x0B))
    write("host_queue", "garbage", bytes([0x05, 0, 24, 0, 0xFF, 0xFF, 0xFF, 0x7F]) + bytes(40))
    # Commands for the controller fuzzer (fuzz_controller.cc): flags (bit 0 I/O queue, bit 1
    # data back), a 64-byte SQE, a 16-bit length, then the data to the controller.
    def rec(flags, opcode, nsid=0, cdw=(0,) * 6, data=b"", length=None):
        sqe = struct.pack("<BBHI", opcode, 0x40, 1, nsid) + bytes(16) + bytes(16) + struct.pack("<6I", *(tuple(cdw) + (0,) * (6 - len(cdw))))
        length = len(data) if length is None else length
        return bytes([flags]) + sqe + struct.pack("<H", length) + data
    copy0 = ranges(0, [(0, 0, 8), (0, 64, 8)])
    copy2 = ranges(2, [(2, 0, 8), (1, 16, 8)])
    dsm = struct.pack("<IIQ", 0, 8, 100) + struct.pack("<IIQ", 0, 0, 0)
    write("controller", "admin", rec(2, 0x06, 0, (1,), length=4096) + rec(2, 0x06, 1, (0,), length=4096) +
          rec(2, 0x02, 0, (0x05 | (1023 << 16),), length=4096) + rec(2, 0x0A, 0, (0x07,), length=0) +
          rec(0, 0x0C) + rec(0, 0x18) + rec(0, 0x7F))
    write("controller", "io", rec(1, 0x01, 1, (0, 0, 7), data=bytes(range(256)) * 16) +
          rec(3, 0x02, 1, (0, 0, 7), length=4096) + rec(1, 0x08, 3, (0, 0, 15)) +
          rec(1, 0x09, 1, (1, 1 << 2), data=dsm) + rec(1, 0x00, 2) +
          rec(1, 0x19, 1, (512, 0, 1), data=copy0) + rec(1, 0x19, 1, (512, 0, 1 | (2 << 8)), data=copy2) +
          rec(1, 0x19, 3, (0, 0, 0), data=ranges(0, [(0, 0, 1)])) + rec(1, 0x02, 9, (0,), length=512))

    # Authentication records for fuzz_auth.cc: flags (0 Auth Send of the bytes, 1 Auth Receive,
    # 2 a raw SQE, 3 the right Reply; +4 I/O queue, +8 reconnect first), a 16-bit length, bytes.
    def negotiate(tid, groups):
        m = bytearray(8 + 64)
        m[4:6] = struct.pack("<H", tid)
        m[7], m[8], m[10], m[11] = 1, 1, 1, len(groups)
        m[12] = 1  # hmac(sha256)
        m[42:42 + len(groups)] = bytes(groups)
        return bytes(m)
    def send(msg, flags=0):
        return bytes([flags]) + struct.pack("<H", len(msg)) + msg
    def receive(length=4096, flags=1):
        return bytes([flags]) + struct.pack("<H", length)
    identify = struct.pack("<BBHI", 0x06, 0, 1, 0) + bytes(32) + struct.pack("<6I", 1, 0, 0, 0, 0, 0)
    write("auth", "null-success-then-io", bytes([0]) + send(negotiate(1, [0])) + receive() +
          bytes([3, 0, 0]) + receive() + bytes([2]) + struct.pack("<H", 4096) + identify +
          send(negotiate(1, [0]), 4) + receive(flags=5) + bytes([7, 0, 0]) + receive(flags=5) +
          send(negotiate(2, [0])) + receive() + send(bytes([1, 2, 0, 0, 2, 0]) + bytes(60)))
    def wrong_reply(tid, dh_bytes):
        m = bytearray(16 + 64 + dh_bytes)
        m[0], m[1], m[6] = 1, 2, 32
        m[4:6] = struct.pack("<H", tid)
        m[10:12] = struct.pack("<H", dh_bytes)
        m[16:48] = bytes([0x55]) * 32
        m[80:] = bytes([2]) * dh_bytes
        return bytes(m)
    write("auth", "dh-guesses", bytes([1]) + (send(negotiate(1, [1])) + receive() +
          send(wrong_reply(1, 256)) + receive()) * 2 +
          bytes([8, 0, 0]) + send(negotiate(3, [1, 2])) + receive() + send(negotiate(4, [1])))


if __name__ == "__main__":
    main()
