// SPDX-License-Identifier: Apache-2.0
// How the fuzz targets of store files (fuzz_store, fuzz_usage) turn an input
// into a corrupt copy of a valid file: from the input's front, a byte whose
// low bit asks for truncation (then 3 bytes of the new length, modulo the
// file's size), then (3-byte offset, byte) pairs, offsets big endian and
// modulo the size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

inline std::string patched_file(const std::string &original, const std::uint8_t *data, std::size_t size) {
    std::string file = original;
    std::size_t pos = 0;
    const bool truncate = size > 0 && (data[pos++] & 1);
    if (truncate && pos + 3 <= size && !original.empty()) {
        const std::size_t length = std::size_t{data[pos]} << 16 | std::size_t{data[pos + 1]} << 8 | data[pos + 2];
        file.resize(length % original.size());
        pos += 3;
    }
    for (; pos + 4 <= size && !file.empty(); pos += 4) {
        const std::size_t offset = std::size_t{data[pos]} << 16 | std::size_t{data[pos + 1]} << 8 | data[pos + 2];
        file[offset % file.size()] = static_cast<char>(data[pos + 3]);
    }
    return file;
}
