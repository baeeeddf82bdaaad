// dns_answer.cpp — see dns_answer.hpp.
#include "gateway/dns/dns_answer.hpp"

namespace flushgate::gateway {

lookup_status classify(const dns_answer& a) {
  switch (a.status) {
    case ARES_SUCCESS: return lookup_status::found;
    case ARES_ENODATA: return lookup_status::nodata;
    case ARES_ENOTFOUND:
      if (a.message.size() >= 4 && (a.message[3] & 0x0Fu) == dns_rcode_nxdomain) {
        return lookup_status::nxdomain;
      }
      return lookup_status::temporary;
    default: return lookup_status::temporary;
  }
}

lookup_status combine(lookup_status x, lookup_status y) {
  auto rank = [](lookup_status s) {
    switch (s) {
      case lookup_status::found: return 3;
      case lookup_status::temporary: return 2;
      case lookup_status::nodata: return 1;
      case lookup_status::nxdomain: return 0;
    }
    return 0;
  };
  return rank(x) >= rank(y) ? x : y;
}

bool normalise_host_name(std::string& name) {
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (name.empty() || name.size() > max_name_length) return false;
  std::size_t label = 0;
  bool ok = true;
  // The whole name is lower-cased even when it is not a host name: the
  // doctor quotes it back.
  for (char& c : name) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c == '.') {
      if (label == 0) ok = false;
      label = 0;
      continue;
    }
    const bool ldh = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    if (!ldh || ++label > max_label_length) ok = false;
  }
  return ok && label != 0;
}

}  // namespace flushgate::gateway
