// store.cpp — the queue error category and the names of the store's enums
// (see store.hpp). The names are what the CLI, the HTTP API and the SQLite
// schema use, so they never change once released.
#include "queue/store.hpp"

#include <string>

namespace flushgate::queue {

namespace {

// boost::system::error_category has a protected non-virtual destructor
// (categories are never deleted through a base pointer); Boost silences the
// same warning for its own categories.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class queue_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "flushgate.queue"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ok:
        return "success";
      case errc::not_found:
        return "no such customer or message";
      case errc::name_taken:
        return "name already taken";
      case errc::domain_taken:
        return "domain already belongs to a customer";
      case errc::not_empty:
        return "customer still has queued mail";
      case errc::disk_full:
        return "queue storage is full";
      case errc::io_error:
        return "queue storage failed";
      case errc::invalid_argument:
        return "invalid value for the queue store";
      case errc::lease_lost:
        return "delivery lease held by another node or another run";
    }
    return "unknown queue error " + std::to_string(ev);
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& queue_category() noexcept {
  static const queue_category_impl category;
  return category;
}

const char* to_string(customer_state s) noexcept {
  switch (s) {
    case customer_state::enabled:
      return "enabled";
    case customer_state::disabled:
      return "disabled";
    case customer_state::suspended:
      return "suspended";
  }
  return "unknown";
}

const char* to_string(delivery_mode m) noexcept {
  switch (m) {
    case delivery_mode::relay:
      return "relay";
    case delivery_mode::hold:
      return "hold";
    case delivery_mode::odmr:
      return "odmr";
  }
  return "unknown";
}

const char* to_string(link_kind k) noexcept {
  switch (k) {
    case link_kind::dsl:
      return "dsl";
    case link_kind::dialup:
      return "dialup";
  }
  return "unknown";
}

// The parsers accept exactly the names to_string produces (lower case):
// they read operator input and stored rows, and one spelling avoids drift.
std::optional<customer_state> parse_customer_state(std::string_view s) noexcept {
  for (auto v : {customer_state::enabled, customer_state::disabled, customer_state::suspended}) {
    if (s == to_string(v)) return v;
  }
  return std::nullopt;
}

std::optional<delivery_mode> parse_delivery_mode(std::string_view s) noexcept {
  for (auto v : {delivery_mode::relay, delivery_mode::hold, delivery_mode::odmr}) {
    if (s == to_string(v)) return v;
  }
  return std::nullopt;
}

std::optional<link_kind> parse_link_kind(std::string_view s) noexcept {
  for (auto v : {link_kind::dsl, link_kind::dialup}) {
    if (s == to_string(v)) return v;
  }
  return std::nullopt;
}

boost::system::result<std::vector<std::string>> store::read_contents(
    std::span<const std::string> qids) {
  std::vector<std::string> out;
  out.reserve(qids.size());
  for (const auto& qid : qids) {
    auto c = read_content(qid);
    if (!c) return c.error();
    out.push_back(std::move(*c));
  }
  return out;
}

}  // namespace flushgate::queue
