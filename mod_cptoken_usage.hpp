// SPDX-License-Identifier: Apache-2.0
// What mod_cptoken.cpp tells the manager's handler about last used: where
// the usage reader that httpd's parent started listens (CPTokenUsageSocket).
// The handler asks it with query_usage() (lib/store/usage_reader.hpp).
#pragma once

#include <string>

/// The socket of the usage reader that CPTokenUsageSocket configured and
/// httpd's parent started, for query_usage(); empty if none is configured
/// or it could not start (logged, CPT0205): last used is then unavailable.
/// The reader may still end later: query_usage() then throws StoreError.
std::string configured_usage_socket();
