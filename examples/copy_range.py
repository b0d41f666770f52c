#!/usr/bin/env python3
"""Copies 1 MiB of a file to another offset through libblkcopy with ctypes (no build step),
then checks the destination against the original bytes.

    LD_LIBRARY_PATH=PREFIX/lib python3 copy_range.py /tmp/blkcopy-example-py.img
"""
import ctypes
import ctypes.util
import os
import sys

MIB = 1024 * 1024


class CopyResult(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("bytes", ctypes.c_uint64), ("backward", ctypes.c_int),
                ("offloaded_bytes", ctypes.c_uint64), ("emulated_bytes", ctypes.c_uint64),
                ("host_read_bytes", ctypes.c_uint64), ("host_written_bytes", ctypes.c_uint64),
                ("commands", ctypes.c_uint64), ("seconds", ctypes.c_double),
                ("error", ctypes.c_char * 256)]


PROGRESS = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)


class CopyOptions(ctypes.Structure):
    """blkcopy_copy_options: `size` first, so that the struct can grow (BLKCOPY_COPY_OPTIONS_INIT)."""
    _fields_ = [("size", ctypes.c_uint32), ("emulation", ctypes.c_int),
                ("buffer_bytes", ctypes.c_uint64), ("chunk_bytes", ctypes.c_uint64),
                ("progress", PROGRESS), ("progress_arg", ctypes.c_void_p),
                ("cancel", ctypes.c_void_p)]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/blkcopy-example-py.img"
    lib = ctypes.CDLL(ctypes.util.find_library("blkcopy") or "libblkcopy.so")
    lib.blkcopy_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.blkcopy_close.argtypes = [ctypes.c_void_p]
    lib.blkcopy_copy.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64,
                                 ctypes.c_uint64, ctypes.POINTER(CopyOptions), ctypes.POINTER(CopyResult)]
    lib.blkcopy_read.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64]
    lib.blkcopy_strerror.restype = ctypes.c_char_p

    original = bytes((i * 7 + i // 4096) & 0xFF for i in range(MIB))
    with open(path, "wb") as f:
        f.write(original)
        f.truncate(4 * MIB)
    dev = ctypes.c_void_p()
    rc = lib.blkcopy_open(path.encode(), ctypes.byref(dev))
    if rc:
        sys.exit(f"blkcopy_open {path}: {lib.blkcopy_strerror(rc).decode()}")
    seen = []  # progress: bytes done, on the calling thread
    on_progress = PROGRESS(lambda _arg, done, _total: seen.append(done))
    options = CopyOptions(size=ctypes.sizeof(CopyOptions), progress=on_progress)
    result = CopyResult()
    rc = lib.blkcopy_copy(dev, 0, dev, 2 * MIB, MIB, ctypes.byref(options), ctypes.byref(result))
    if rc:
        sys.exit(f"copy failed after {result.bytes} bytes: {result.error.decode()}")
    if not seen or seen[-1] != result.bytes:
        sys.exit(f"progress ended at {seen[-1:]}, not at {result.bytes}")
    print(f"copied {result.bytes} bytes: offloaded {result.offloaded_bytes}, "
          f"emulated {result.emulated_bytes}")
    check = ctypes.create_string_buffer(MIB)
    rc = lib.blkcopy_read(dev, 2 * MIB, check, MIB)
    lib.blkcopy_close(dev)
    if rc or check.raw != original:
        sys.exit("the copy does not match the original data")
    print("the copy matches the original data")
    os.unlink(path)


if __name__ == "__main__":
    main()
