// The libFuzzer entry point every fuzz target defines. Built with clang and -fsanitize=fuzzer
// (scripts/fuzz) the targets explore; built with the project's compiler they link
// replay_main.cc and run the seed corpus as a regression test (ctest fuzz.replay.*).
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
