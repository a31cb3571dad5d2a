// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the decision itself. The token shape check on any bytes,
// and verify_token (user, token and client address from the request, any
// time) against a small real store made once per process under /tmp. An
// accepted verdict must be right: a stored live token, its user, not
// expired, the client allowed. Nothing but StoreError may be thrown.
//
// Input, from the front: a selector byte (0-3: use that stored token, the
// revoked one included; else the token text below), 8 bytes of `now` (little
// endian), the client (a byte 0: none, 1: IPv4 + 4 bytes, 2: IPv6 + 16
// bytes, 3: IPv4-mapped IPv6 + 4 bytes), a length byte and the user, then the
// token. Missing bytes read as zero.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "token/names.hpp"
#include "store/store.hpp"
#include "token/token.hpp"
#include "auth/verify.hpp"

using namespace cptoken;

namespace {

void check(bool property) {
    if (!property) __builtin_trap();
}

struct Issued {
    std::string token;
    TokenRecord record;
    bool live;
};

bool reference_shape(std::string_view token) {
    if (token.size() != 32) return false;
    for (char c : token)
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
    return true;
}

Network network(const char *text) {
    const auto parsed = parse_network(text);
    if (!parsed) std::abort();
    return *parsed;
}

struct World {
    std::string dir;
    std::vector<Issued> issued;
    std::unique_ptr<TokenStore> store;

    World() {
        char pattern[] = "/tmp/cptoken-fuzz-token-XXXXXX";
        if (!mkdtemp(pattern)) std::abort();
        dir = pattern;
        // Fixed tokens, so that a crash input replays: two issued here (valid
        // checksum), one imported (none), one revoked.
        issued = {
            {"U7HMR63FGY292DQZ4H5BFH16JLYMO01M", {"alice", "deploy", 1767225600, 0, {}}, true},
            {"AAAABBBBCCCCDDDDEEEEFFFFGGGGHHHH",
             {"alice", "ci", 1767225600, 1800000000, {network("192.0.2.0/24"), network("2001:db8::/32")}}, true},
            {"0123456789ABCDEFGHIJKLMNOPQRSTUV", {"bob.smith", "imported", 1767225600, 1900000000,
                                                  {network("10.0.0.1"), network("::ffff:172.16.0.0/108")}}, true},
            {"ZZZZYYYYXXXXWWWWVVVVUUUUTTTTSSSS", {"bob.smith", "gone", 1767225600, 0, {}}, false},
        };
        init_store(dir + "/store", getgid());
        {
            TokenStore writer(dir + "/store", Access::read_write);
            for (const Issued &token : issued) writer.add(token_digest(token.token), token.record);
            writer.revoke("bob.smith", "gone");
        }
        store = std::make_unique<TokenStore>(dir + "/store", Access::read_only);
    }
    ~World() {
        store.reset();
        std::error_code ignored;
        std::filesystem::remove_all(dir, ignored);
    }
    static World &world();
};

World &World::world() {
    static World instance;
    return instance;
}

// Reads the input front to back; past its end, zeros and empty text.
class Reader {
public:
    Reader(const std::uint8_t *data, std::size_t size) : data_(data), size_(size) {}
    std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
    Seconds seconds() {
        std::uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits |= std::uint64_t{byte()} << (8 * i);
        return static_cast<Seconds>(bits);
    }
    std::string text(std::size_t length) {
        const std::size_t taken = std::min(length, size_ - pos_);
        std::string out(reinterpret_cast<const char *>(data_) + pos_, taken);
        pos_ += taken;
        return out;
    }
    std::string rest() { return text(size_ - pos_); }

private:
    const std::uint8_t *data_;
    std::size_t size_, pos_ = 0;
};

std::optional<Address> client_from(Reader &input) {
    Address address;
    switch (input.byte() % 4) {
        case 0: return std::nullopt;  // cptoken check without --ip
        case 1: address.family = 4; break;
        case 2: address.family = 6; break;
        case 3:  // IPv4-mapped IPv6, as lib callers may pass it
            address.family = 6;
            address.bytes[10] = address.bytes[11] = 0xff;
            for (int i = 12; i < 16; ++i) address.bytes[i] = input.byte();
            return address;
    }
    for (unsigned i = 0; i < (address.family == 4 ? 4u : 16u); ++i) address.bytes[i] = input.byte();
    return address;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    World &world = World::world();
    const std::string_view raw(reinterpret_cast<const char *>(data), size);
    const bool shape = has_token_shape(raw);
    check(shape == reference_shape(raw));
    check(!has_valid_checksum(raw) || shape);

    Reader input(data, size);
    const std::uint8_t selector = input.byte();
    const Seconds now = input.seconds();
    const auto client = client_from(input);
    const std::string user = input.text(input.byte());
    std::string token = input.rest();
    if (selector < world.issued.size()) token = world.issued[selector].token;

    Verdict verdict;
    try {
        verdict = verify_token(*world.store, user, token, client, now, all_services);
    } catch (const StoreError &) {
        return 0;  // fail closed: the caller refuses
    }  // anything else escapes and libFuzzer reports it

    check(verdict.accepted() == (verdict.reason == Reason::accepted));
    check((verdict.reason == Reason::malformed) == (!is_valid_user(user) || !has_token_shape(token)));
    const Issued *match = nullptr;
    for (const Issued &issued : world.issued)
        if (issued.live && issued.token == token) match = &issued;
    // A record is found exactly for a live stored token, and it is that token's.
    if (verdict.reason != Reason::malformed) check(verdict.record.has_value() == (match != nullptr));
    if (verdict.record) check(match && *verdict.record == match->record);
    if (verdict.reason == Reason::mistyped) check(!has_valid_checksum(token));
    if (verdict.accepted()) {
        check(match != nullptr);
        check(match->record.user == user);
        check(match->record.expires == 0 || now < match->record.expires);
        check(!client || allowed_from(match->record.allowed_ips, *client));
    }
    return 0;
}
