// fill_store.cpp — flushgate-fill-store: fills a spool with many customers
// and queued messages, for scale benchmarks (scripts/bench/scale).
//
// Usage: flushgate-fill-store --dir DIR [--messages N] [--customers N]
//                             [--min-size BYTES] [--max-size BYTES]
//                             [--max-age SECONDS] [--largest-share PERCENT]
//                             [--batch N] [--seed N]
//
// Purpose: a queue as big as an ISP's after a long outage, without sending a
//   million messages over SMTP. Writes through queue::sqlite_store (add_customer,
//   then commit_messages in large transactions), so the schema and its
//   migrations stay in one place and the result is a spool flushgated opens
//   as its data_dir. Customers are cust00001 ... with the domain
//   cNNNNN.test, mode hold, no route and one DSL link user (custNNNNN-dsl):
//   nothing is ever delivered from them until a trigger. The first customer,
//   cust00001, gets about --largest-share percent of the messages (default
//   10: a customer whose line has been down for long, the worst case for its
//   own summary); every other message goes to one of the others drawn at
//   random (about the same number each). A message has one recipient (one
//   in four has two), arrived at a random time within the
//   last --max-age seconds (default 3 h: younger than the default
//   delay_warning_time, so the daemon's sweep sends no delay notices), and
//   is a plain-text mail of --min-size to --max-size octets (default 2048 to
//   5120) with a unique Message-ID. The same --seed gives the same queue
//   (except for queue ids and arrival times, which follow the clock).
//   Prints one line of figures on stdout when done, progress on stderr.
// Security: a benchmark tool; writes only under DIR (created mode 0700 by
//   the store). Numbers are bounded (messages <= 100,000,000, customers <=
//   99,999, sizes <= 64 MiB).
// Errors: exit 2 for bad options or a DIR that already holds customers
//   (never mixes two fills), exit 1 when the store fails (the message names
//   the step); a failed batch leaves nothing of itself behind (all-or-nothing
//   commit), earlier batches stay.
// See also: queue/store.hpp, queue/sqlite_store.hpp, scripts/bench/README.md.
#include "queue/sqlite_store.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using flushgate::queue::new_message;

struct options {
  std::string dir;
  std::uint64_t messages = 1000000;
  std::uint64_t customers = 10000;
  std::uint64_t min_size = 2048;
  std::uint64_t max_size = 5120;
  std::uint64_t max_age = 3 * 3600;
  std::uint64_t largest_share = 10;  // percent of the messages for cust00001
  std::uint64_t batch = 5000;
  std::uint64_t seed = 1;
};

constexpr std::uint64_t max_messages = 100000000;
constexpr std::uint64_t max_customers = 99999;
constexpr std::uint64_t max_size_limit = 64ull << 20;

int usage(std::string_view why) {
  std::fprintf(stderr,
               "flushgate-fill-store: %.*s\n"
               "usage: flushgate-fill-store --dir DIR [--messages N] [--customers N] "
               "[--min-size BYTES] [--max-size BYTES] [--max-age SECONDS] "
               "[--largest-share PERCENT] [--batch N] [--seed N]\n",
               static_cast<int>(why.size()), why.data());
  return 2;
}

bool parse_number(std::string_view text, std::uint64_t& out) {
  if (text.empty() || text.size() > 18) return false;
  std::uint64_t v = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(ch - '0');
  }
  out = v;
  return true;
}

// Parses argv into o; an error message, or "" when all is well.
std::string parse_options(int argc, char** argv, options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return fmt::format("{} needs a value", arg);
    const std::string_view value = argv[++i];
    if (arg == "--dir") {
      o.dir = value;
      continue;
    }
    std::uint64_t* target = arg == "--messages"    ? &o.messages
                            : arg == "--customers" ? &o.customers
                            : arg == "--min-size"  ? &o.min_size
                            : arg == "--max-size"  ? &o.max_size
                            : arg == "--max-age"   ? &o.max_age
                            : arg == "--largest-share" ? &o.largest_share
                            : arg == "--batch"     ? &o.batch
                            : arg == "--seed"      ? &o.seed
                                                   : nullptr;
    if (target == nullptr) return fmt::format("unknown option {}", arg);
    if (!parse_number(value, *target)) return fmt::format("{} takes a number, got {}", arg, value);
  }
  if (o.dir.empty()) return "--dir is needed";
  if (o.messages > max_messages) return fmt::format("--messages is at most {}", max_messages);
  if (o.customers == 0 || o.customers > max_customers) {
    return fmt::format("--customers is 1 to {}", max_customers);
  }
  if (o.min_size < 256 || o.min_size > o.max_size || o.max_size > max_size_limit) {
    return fmt::format("sizes: 256 <= --min-size <= --max-size <= {}", max_size_limit);
  }
  if (o.batch == 0 || o.batch > 100000) return "--batch is 1 to 100000";
  if (o.max_age > 10ull * 365 * 86400) return "--max-age is at most ten years";
  if (o.largest_share > 100) return "--largest-share is a percentage (0 to 100)";
  if (o.customers == 1) o.largest_share = 100;
  return {};
}

// Text to cut bodies from: lines of words, CRLF-terminated, never a lone
// "." line (the content is stored as received, not dot-stuffed, but a real
// sender's mail would not hold one either).
std::string make_text_pool(std::mt19937_64& rng) {
  static constexpr std::string_view words[] = {
      "the",    "line",   "customer", "queue",   "held",     "mail",    "server", "link",
      "report", "monday", "invoice",  "meeting", "attached", "please",  "review", "thanks",
      "order",  "status", "update",   "minutes", "regards",  "project", "draft",  "numbers"};
  std::string pool;
  pool.reserve(256 * 1024);
  std::uniform_int_distribution<std::size_t> pick(0, std::size(words) - 1);
  while (pool.size() < 256 * 1024) {
    std::string line;
    while (line.size() < 66) {
      if (!line.empty()) line += ' ';
      line += words[pick(rng)];
    }
    pool += line;
    pool += "\r\n";
  }
  return pool;
}

// One message of `size` octets (at least the headers) for customer `number`.
std::string make_content(std::uint64_t serial, std::uint64_t number, std::int64_t arrival,
                         std::size_t size, const std::string& pool, std::mt19937_64& rng) {
  char date[64];
  const std::time_t t = static_cast<std::time_t>(arrival);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  std::string out = fmt::format(
      "Received: from mail.sender{0}.example (mail.sender{0}.example [192.0.2.{1}])\r\n"
      "\tby gw.isp.test (flushgate) with ESMTP\r\n"
      "\tfor <user@c{2:05}.test>; {3}\r\n"
      "From: Sender {0} <someone@sender{0}.example>\r\n"
      "To: <user@c{2:05}.test>\r\n"
      "Subject: report {4}\r\n"
      "Date: {3}\r\n"
      "Message-ID: <{4}.fill@sender{0}.example>\r\n"
      "MIME-Version: 1.0\r\n"
      "Content-Type: text/plain; charset=us-ascii\r\n"
      "\r\n",
      serial % 997, 1 + serial % 250, number, date, serial);
  if (out.size() + 2 < size) {
    // A slice of whole lines from a random place in the pool, cut to size.
    std::uniform_int_distribution<std::size_t> at(0, pool.size() - 1);
    std::size_t from = pool.find("\r\n", at(rng));
    from = from == std::string::npos || from + 2 >= pool.size() ? 0 : from + 2;
    while (out.size() + 2 < size) {
      const std::size_t n = std::min(size - 2 - out.size(), pool.size() - from);
      out.append(pool, from, n);
      from = 0;
    }
    // Never end inside a CRLF pair, then end with one.
    while (!out.empty() && (out.back() == '\r' || out.back() == '\n')) out.pop_back();
    out += "\r\n";
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using clock = std::chrono::steady_clock;
  options o;
  if (auto why = parse_options(argc, argv, o); !why.empty()) return usage(why);

  auto opened = flushgate::queue::sqlite_store::open(o.dir);
  if (!opened) {
    std::fprintf(stderr, "flushgate-fill-store: open %s: %s\n", o.dir.c_str(),
                 opened.error().message().c_str());
    return 1;
  }
  auto& store = **opened;
  auto existing = store.list_customers();
  if (!existing) {
    std::fprintf(stderr, "flushgate-fill-store: list customers: %s\n",
                 existing.error().message().c_str());
    return 1;
  }
  if (!existing->empty()) return usage(fmt::format("{} already holds customers", o.dir));

  const auto started = clock::now();
  std::vector<std::int64_t> ids;
  ids.reserve(o.customers);
  for (std::uint64_t n = 1; n <= o.customers; ++n) {
    flushgate::queue::customer c;
    c.name = fmt::format("cust{:05}", n);
    c.domains = {fmt::format("c{:05}.test", n)};
    c.mode = flushgate::queue::delivery_mode::hold;
    c.link_users = {{fmt::format("cust{:05}-dsl", n), flushgate::queue::link_kind::dsl, ""}};
    if (auto ec = store.add_customer(c)) {
      std::fprintf(stderr, "flushgate-fill-store: add customer %s: %s\n", c.name.c_str(),
                   ec.message().c_str());
      return 1;
    }
    ids.push_back(c.id);
    if (n % 1000 == 0) std::fprintf(stderr, "flushgate-fill-store: %llu customers\n",
                                    static_cast<unsigned long long>(n));
  }
  const auto customers_done = clock::now();

  std::mt19937_64 rng(o.seed);
  const std::string pool = make_text_pool(rng);
  // Customer 0 (cust00001) takes its share, spread evenly over the fill,
  // the others are drawn uniformly.
  std::uniform_int_distribution<std::uint64_t> pick_share(0, 99);
  std::uniform_int_distribution<std::uint64_t> pick_other(o.customers > 1 ? 1 : 0,
                                                          o.customers - 1);
  std::uniform_int_distribution<std::uint64_t> pick_size(o.min_size, o.max_size);
  std::uniform_int_distribution<std::uint64_t> pick_age(0, o.max_age);
  std::uniform_int_distribution<int> pick_second(0, 3);
  const std::int64_t now = static_cast<std::int64_t>(std::time(nullptr));

  std::uint64_t done = 0;
  std::uint64_t bytes = 0;
  std::vector<new_message> batch;
  batch.reserve(o.batch);
  while (done < o.messages) {
    batch.clear();
    const std::uint64_t count = std::min(o.batch, o.messages - done);
    for (std::uint64_t i = 0; i < count; ++i) {
      const std::uint64_t serial = done + i + 1;
      const std::uint64_t index = pick_share(rng) < o.largest_share ? 0 : pick_other(rng);
      const std::uint64_t number = index + 1;
      new_message m;
      m.customer_id = ids[index];
      m.sender = fmt::format("someone@sender{}.example", serial % 997);
      m.recipients.push_back({fmt::format("user@c{:05}.test", number), "", ""});
      if (pick_second(rng) == 0) {
        m.recipients.push_back({fmt::format("other@c{:05}.test", number), "", ""});
      }
      m.client = fmt::format("mail.sender{0}.example [192.0.2.{1}]", serial % 997,
                             1 + serial % 250);
      m.arrival = now - static_cast<std::int64_t>(pick_age(rng));
      m.content = make_content(serial, number, m.arrival,
                               static_cast<std::size_t>(pick_size(rng)), pool, rng);
      bytes += m.content.size();
      batch.push_back(std::move(m));
    }
    auto qids = store.commit_messages(batch);
    if (!qids) {
      std::fprintf(stderr, "flushgate-fill-store: commit after %llu messages: %s\n",
                   static_cast<unsigned long long>(done), qids.error().message().c_str());
      return 1;
    }
    done += count;
    if (done % 100000 < count || done == o.messages) {
      std::fprintf(stderr, "flushgate-fill-store: %llu messages\n",
                   static_cast<unsigned long long>(done));
    }
  }
  const auto finished = clock::now();
  auto seconds = [](clock::duration d) { return std::chrono::duration<double>(d).count(); };
  std::printf("customers=%llu messages=%llu content_bytes=%llu customer_seconds=%.1f "
              "message_seconds=%.1f\n",
              static_cast<unsigned long long>(o.customers),
              static_cast<unsigned long long>(done), static_cast<unsigned long long>(bytes),
              seconds(customers_done - started), seconds(finished - customers_done));
  return 0;
}
