// store_copy.cpp — see store_copy.hpp.
#include "queue/store_copy.hpp"

#include <map>

namespace flushgate::queue {

namespace {

// The target's id for customer c: added now, or found by name.
boost::system::result<std::int64_t> target_customer(store& to, const customer& c, copy_report& report) {
  customer copy = c;
  copy.id = 0;
  const auto ec = to.add_customer(copy);
  if (!ec) {
    ++report.customers_added;
    return copy.id;
  }
  if (ec != errc::name_taken) return ec;
  auto present = to.find_customer(c.name);
  if (!present) return present.error();
  ++report.customers_present;
  return present->id;
}

}  // namespace

copy_report copy_store(store& from, store& to, const std::function<void(const copy_report&)>& progress) {
  copy_report report;
  auto fail = [&report](const std::string& what, const boost::system::error_code& ec) {
    report.error = what + ": " + ec.message();
    return report;
  };
  auto customers = from.list_customers();
  if (!customers) return fail("reading the source's customers", customers.error());
  std::map<std::int64_t, std::int64_t> ids;  // source id -> target id
  for (const auto& c : *customers) {
    auto id = target_customer(to, c, report);
    if (!id) return fail("customer " + c.name, id.error());
    ids[c.id] = *id;
  }
  auto links = from.list_links();
  if (!links) return fail("reading the source's links", links.error());
  for (auto l : *links) {
    l.customer_id = ids[l.customer_id];
    if (auto ec = to.save_link(l)) return fail("link " + l.user, ec);
    ++report.links;
  }
  for (const auto& c : *customers) {
    auto messages = from.list_messages(c.id, 0);
    if (!messages) return fail("reading " + c.name + "'s queue", messages.error());
    for (auto m : *messages) {
      auto content = from.read_content(m.qid);
      if (!content) {
        if (content.error() == errc::not_found) continue;  // left the source meanwhile
        return fail("reading message " + m.qid, content.error());
      }
      m.customer_id = ids[c.id];
      const auto ec = to.import_message(m, *content);
      if (ec == errc::name_taken) {
        ++report.messages_present;
        continue;
      }
      if (ec) return fail("message " + m.qid, ec);
      ++report.messages_copied;
      report.bytes_copied += content->size();
    }
    if (progress) progress(report);
  }
  return report;
}

}  // namespace flushgate::queue
