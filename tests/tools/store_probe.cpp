// store_probe.cpp — flushgate-store-probe: times the store's read queries on
// an existing spool, without the daemon (scripts/bench/scale).
//
// Usage: flushgate-store-probe --dir DIR [--samples N] [--seed N]
//
// Purpose: tells the store's share of a slow control command from the
//   control channel's: opens DIR through queue::sqlite_store (migrating it
//   if needed, which is timed as part of open) and times open,
//   list_customers, queue_summary (twice: the second with a warm cache),
//   customer_stats and queue_age_histogram for N customers drawn at random
//   (median, p99, max) and for the customer with the most mail, and the
//   whole queue's age histogram. Prints one
//   "name value" line per figure, milliseconds, on stdout.
// Security: a benchmark tool; reads DIR, writes only what open() migrates.
// Errors: exit 2 for bad options, 1 when the store fails (named on stderr).
// Limitations: a second connection next to a running daemon shares the OS
//   page cache with it, not SQLite's; figures are from a warm OS cache when
//   the daemon or a fill ran just before.
// See also: queue/store.hpp, tests/tools/fill_store.cpp, scripts/bench/scale.
#include "queue/sqlite_store.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

// "NAME_median NAME_p99 NAME_max" lines of the sorted samples.
void print_spread(const char* name, std::vector<double> samples) {
  if (samples.empty()) return;
  std::sort(samples.begin(), samples.end());
  const auto at = [&](double q) {
    return samples[std::min(samples.size() - 1, static_cast<std::size_t>(q * samples.size()))];
  };
  std::printf("%s_median %.3f\n%s_p99 %.3f\n%s_max %.3f\n", name, at(0.5), name, at(0.99), name,
              samples.back());
}

int fail(const char* what, const boost::system::error_code& ec) {
  std::fprintf(stderr, "flushgate-store-probe: %s: %s\n", what, ec.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  unsigned long samples = 100;
  unsigned long seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view arg = argv[i];
    if (arg == "--dir") {
      dir = argv[i + 1];
    } else if (arg == "--samples" || arg == "--seed") {
      char* end = nullptr;
      const unsigned long v = std::strtoul(argv[i + 1], &end, 10);
      if (end == argv[i + 1] || *end != '\0' || v > 1000000) {
        std::fprintf(stderr, "flushgate-store-probe: %s takes a number up to 1000000\n", argv[i]);
        return 2;
      }
      (arg == "--samples" ? samples : seed) = v;
    } else {
      std::fprintf(stderr, "flushgate-store-probe: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (dir.empty() || argc % 2 == 0) {
    std::fprintf(stderr, "usage: flushgate-store-probe --dir DIR [--samples N] [--seed N]\n");
    return 2;
  }

  auto start = clock_type::now();
  auto opened = flushgate::queue::sqlite_store::open(dir);
  if (!opened) return fail("open", opened.error());
  std::printf("open %.3f\n", ms_since(start));
  auto& store = **opened;

  start = clock_type::now();
  auto customers = store.list_customers();
  if (!customers) return fail("list_customers", customers.error());
  std::printf("list_customers %.3f\n", ms_since(start));
  std::vector<flushgate::queue::queue_stats> summary;
  for (const char* name : {"queue_summary_first", "queue_summary"}) {
    start = clock_type::now();
    auto got = store.queue_summary();
    if (!got) return fail("queue_summary", got.error());
    std::printf("%s %.3f\n", name, ms_since(start));
    summary = std::move(*got);
  }
  if (customers->empty() || summary.empty()) return 0;

  const std::vector<std::int64_t> bounds = {300, 3600, 4 * 3600, 86400, 5 * 86400};
  const std::int64_t now = static_cast<std::int64_t>(std::time(nullptr));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::size_t> pick(0, customers->size() - 1);
  std::vector<double> stats_ms;
  std::vector<double> histogram_ms;
  for (unsigned long i = 0; i < samples; ++i) {
    const std::int64_t id = (*customers)[pick(rng)].id;
    start = clock_type::now();
    auto stats = store.customer_stats(id);
    if (!stats) return fail("customer_stats", stats.error());
    stats_ms.push_back(ms_since(start));
    start = clock_type::now();
    auto ages = store.queue_age_histogram(id, now, bounds);
    if (!ages) return fail("queue_age_histogram", ages.error());
    histogram_ms.push_back(ms_since(start));
  }
  print_spread("customer_stats", std::move(stats_ms));
  print_spread("customer_histogram", std::move(histogram_ms));
  // The customer with the most mail: the worst case for per-customer work.
  const auto largest = std::max_element(
      summary.begin(), summary.end(),
      [](const auto& a, const auto& b) { return a.messages < b.messages; });
  start = clock_type::now();
  if (auto stats = store.customer_stats(largest->customer_id); !stats) {
    return fail("customer_stats", stats.error());
  }
  std::printf("customer_stats_largest %.3f\n", ms_since(start));
  start = clock_type::now();
  if (auto ages = store.queue_age_histogram(largest->customer_id, now, bounds); !ages) {
    return fail("queue_age_histogram", ages.error());
  }
  std::printf("customer_histogram_largest %.3f\n", ms_since(start));
  for (const char* name : {"queue_histogram_first", "queue_histogram"}) {
    start = clock_type::now();
    auto ages = store.queue_age_histogram(0, now, bounds);
    if (!ages) return fail("queue_age_histogram", ages.error());
    std::printf("%s %.3f\n", name, ms_since(start));
  }
  return 0;
}
