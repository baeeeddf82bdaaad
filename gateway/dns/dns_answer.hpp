// dns_answer.hpp — what the MX resolver and the DNS doctor share about a
// DNS answer from c-ares: the question, the raw answer, what it means.
//
// Purpose: one reading of c-ares's status codes (found, no data, NXDOMAIN,
// temporary) and of host names, so that delivery and the doctor never
// disagree on whether a name exists. Internal to the gateway module.
// Security: answers come from the network; classify looks only at the
// rcode of a message at least 4 octets long.
// Errors: none (pure functions).
// See also: RFC 1035 §3.2.2, §4.1.1; RFC 3596; RFC 5321 §4.1.2.
#pragma once

#include <ares.h>

#include <cstddef>
#include <string>
#include <vector>

namespace flushgate::gateway {

constexpr int dns_class_in = 1;
constexpr int dns_type_a = 1;
constexpr int dns_type_cname = 5;
constexpr int dns_type_ptr = 12;
constexpr int dns_type_mx = 15;
constexpr int dns_type_aaaa = 28;
constexpr unsigned dns_rcode_nxdomain = 3;
constexpr std::size_t max_name_length = 253;  // without the trailing dot
constexpr std::size_t max_label_length = 63;

struct dns_question {
  std::string name;
  int type = 0;
};

// What c-ares said about one question; a question the batch deadline cut
// off keeps ARES_ETIMEOUT.
struct dns_answer {
  int status = ARES_ETIMEOUT;
  std::vector<unsigned char> message;
};

enum class lookup_status { found, nodata, nxdomain, temporary };

// NXDOMAIN alone is permanent, and only when the answer really carries
// that rcode (anything doubtful is retried).
lookup_status classify(const dns_answer& a);
// found > temporary > nodata > nxdomain: a host exists when either address
// family says so, and failed temporarily when either did.
lookup_status combine(lookup_status x, lookup_status y);
// Lower-cases `name` and drops one trailing dot; true when it is then a
// letter-digit-hyphen host name (RFC 5321 §4.1.2 Domain).
bool normalise_host_name(std::string& name);

}  // namespace flushgate::gateway
