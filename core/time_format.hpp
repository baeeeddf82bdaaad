// time_format.hpp — dates as mail headers and logs write them.
//
// Purpose: RFC 5322 §3.3 date-time ("Sun, 22 Nov 2026 06:00:00 +0000") for
// Received:, Date: and DSN fields, always in UTC with a numeric zone
// (RFC 5321 §4.4: numeric offsets). Errors: none.
#pragma once

#include <ctime>
#include <string>

namespace flushgate::core {

// "Sun, 22 Nov 2026 06:00:00 +0000" for the given unix time.
std::string rfc5322_date(std::time_t t);

}  // namespace flushgate::core
