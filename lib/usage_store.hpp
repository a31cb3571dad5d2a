// The usage store: when, from where and how often each token was last used.
// DIR/usage.mdb (+ -lock), written by httpd children, read by cptoken; kept
// apart from the token store so that httpd needs no write access to tokens.
//
//   usage   SHA-512 digest (64 bytes) -> usage value (see usage_store.cpp)
#pragma once

#include <optional>
#include <string>

#include "store.hpp"

namespace cptoken {

/// Last use of a token, as recorded by httpd.
struct Usage {
    Seconds last_used = 0;
    std::string last_used_ip;
};

/// The usage store: digest -> last use. Written by httpd children, read by
/// the tool, kept apart so that httpd needs no write access to tokens.
class UsageStore {
public:
    /// Opens DIR/usage.mdb. Throws StoreError like TokenStore.
    UsageStore(const std::string &dir, Access access);
    ~UsageStore();
    UsageStore(const UsageStore &) = delete;
    UsageStore &operator=(const UsageStore &) = delete;

    /// The last use recorded for `digest`; nullopt if none, or if its time is
    /// unreadable or outside 2000-01-01..9999-12-31. An address that does not
    /// parse (parse_address) is returned empty (unknown), any other in its
    /// canonical form (to_string). Throws StoreError on a failed read.
    std::optional<Usage> find(const Digest &digest) const;

    /// Records a use. Throws StoreError on a failed write.
    void record(const Digest &digest, const Usage &usage);

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace cptoken
