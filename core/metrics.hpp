// metrics.hpp — the daemon's counters and histograms, rendered in the
// Prometheus text exposition format (version 0.0.4).
//
// Purpose: modules count what happens (a message accepted, a recipient
// deferred, a link event from RADIUS) in one process-wide registry, the way
// they log through core/log; the HTTP API renders it at /metrics, next to
// the gauges it reads from the daemon's state at scrape time (queue per
// customer, disk headroom, links). A family has a name, a help text, a type
// and one sample per label set. Looking a sample up takes a mutex; counting
// on a sample already looked up is one atomic add, safe from any thread.
// Security: label values come from code (reasons, outcomes) or from the
// operator's configuration (customer names); render_sample escapes them.
// Errors: none. Registering one name with two types is a bug (std::logic_error).
// See also: https://prometheus.io/docs/instrumenting/exposition_formats/
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flushgate::core {

// Label pairs in the order they are rendered, e.g. {{"reason", "relay_denied"}}.
using metric_labels = std::vector<std::pair<std::string, std::string>>;

enum class metric_type { counter, gauge, histogram };

// A count that only goes up.
class counter {
 public:
  void add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

// Observations counted into fixed buckets (upper bounds, ascending), with their sum.
class histogram {
 public:
  explicit histogram(std::vector<double> upper_bounds);
  void observe(double value) noexcept;
  const std::vector<double>& upper_bounds() const noexcept { return bounds_; }
  // Cumulative count of observations <= upper_bounds()[i]; i == size() is +Inf.
  std::uint64_t cumulative(std::size_t i) const noexcept;
  std::uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }
  double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // one per bound, plus +Inf
  std::atomic<std::uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

class metrics_registry {
 public:
  // The sample of family `name` with these labels, created at zero on first use.
  counter& counter_for(std::string_view name, std::string_view help, const metric_labels& labels = {});
  // The histogram `name` (one per name, no labels); bounds are fixed by the first call.
  histogram& histogram_for(std::string_view name, std::string_view help, std::vector<double> upper_bounds);
  // Every family in the text format, families sorted by name, samples by labels.
  std::string render() const;

 private:
  struct family {
    metric_type type = metric_type::counter;
    std::string help;
    std::map<metric_labels, std::unique_ptr<counter>> counters;
    std::unique_ptr<histogram> hist;
  };
  family& family_for(std::string_view name, std::string_view help, metric_type type);

  mutable std::mutex mutex_;
  std::map<std::string, family, std::less<>> families_;
};

// The process-wide registry.
metrics_registry& metrics();

// One family's "# HELP" and "# TYPE" lines.
std::string render_family_header(std::string_view name, std::string_view help, metric_type type);
// One sample line: name{labels} value.
std::string render_sample(std::string_view name, const metric_labels& labels, double value);
// The exposition text with label key="value" added first to every sample
// line (a cluster's node label); comment lines are kept as they are.
std::string add_label_to_samples(std::string_view exposition, std::string_view key,
                                 std::string_view value);

}  // namespace flushgate::core
