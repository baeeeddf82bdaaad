// metrics.cpp — see metrics.hpp.
#include "core/metrics.hpp"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace flushgate::core {

histogram::histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

void histogram::observe(double value) noexcept {
  std::size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

std::uint64_t histogram::cumulative(std::size_t i) const noexcept {
  std::uint64_t total = 0;
  for (std::size_t k = 0; k <= i && k <= bounds_.size(); ++k) {
    total += buckets_[k].load(std::memory_order_relaxed);
  }
  return total;
}

metrics_registry::family& metrics_registry::family_for(std::string_view name, std::string_view help,
                                                       metric_type type) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), family{}).first;
    it->second.type = type;
    it->second.help = std::string(help);
  } else if (it->second.type != type) {
    throw std::logic_error("metric " + std::string(name) + " registered with two types");
  }
  return it->second;
}

counter& metrics_registry::counter_for(std::string_view name, std::string_view help,
                                       const metric_labels& labels) {
  std::lock_guard lock(mutex_);
  auto& f = family_for(name, help, metric_type::counter);
  auto& slot = f.counters[labels];
  if (!slot) slot = std::make_unique<counter>();
  return *slot;
}

histogram& metrics_registry::histogram_for(std::string_view name, std::string_view help,
                                           std::vector<double> upper_bounds) {
  std::lock_guard lock(mutex_);
  auto& f = family_for(name, help, metric_type::histogram);
  if (!f.hist) f.hist = std::make_unique<histogram>(std::move(upper_bounds));
  return *f.hist;
}

std::string metrics_registry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += render_family_header(name, f.help, f.type);
    for (const auto& [labels, c] : f.counters) {
      out += render_sample(name, labels, static_cast<double>(c->value()));
    }
    if (f.hist) {
      const auto& h = *f.hist;
      const std::string bucket = name + "_bucket";
      for (std::size_t i = 0; i <= h.upper_bounds().size(); ++i) {
        std::string le = i < h.upper_bounds().size() ? fmt::format("{}", h.upper_bounds()[i]) : "+Inf";
        out += render_sample(bucket, {{"le", le}}, static_cast<double>(h.cumulative(i)));
      }
      out += render_sample(name + "_sum", {}, h.sum());
      out += render_sample(name + "_count", {}, static_cast<double>(h.count()));
    }
  }
  return out;
}

metrics_registry& metrics() {
  static metrics_registry registry;
  return registry;
}

std::string render_family_header(std::string_view name, std::string_view help, metric_type type) {
  const char* type_name = type == metric_type::counter ? "counter"
                          : type == metric_type::gauge ? "gauge"
                                                       : "histogram";
  // HELP text escapes backslash and newline (exposition format).
  std::string escaped;
  for (char c : help) {
    if (c == '\\') {
      escaped += "\\\\";
    } else if (c == '\n') {
      escaped += "\\n";
    } else {
      escaped += c;
    }
  }
  return fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escaped, name, type_name);
}

std::string render_sample(std::string_view name, const metric_labels& labels, double value) {
  std::string out(name);
  if (!labels.empty()) {
    out += '{';
    bool first = true;
    for (const auto& [key, text] : labels) {
      if (!first) out += ',';
      first = false;
      out += key;
      out += "=\"";
      // Label values escape backslash, double quote and newline.
      for (char c : text) {
        if (c == '\\') {
          out += "\\\\";
        } else if (c == '"') {
          out += "\\\"";
        } else if (c == '\n') {
          out += "\\n";
        } else {
          out += c;
        }
      }
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  if (std::isnan(value)) {
    out += "NaN";
  } else if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
  } else if (value == std::floor(value) && std::fabs(value) < 1e15) {
    out += fmt::format("{}", static_cast<std::int64_t>(value));
  } else {
    out += fmt::format("{}", value);
  }
  out += '\n';
  return out;
}

std::string add_label_to_samples(std::string_view exposition, std::string_view key,
                                 std::string_view value) {
  // The label as render_sample writes it, without its braces.
  std::string label = render_sample("x", {{std::string(key), std::string(value)}}, 0);
  label = label.substr(2, label.rfind('}') - 2);
  std::string out;
  out.reserve(exposition.size() + exposition.size() / 4);
  while (!exposition.empty()) {
    const auto eol = exposition.find('\n');
    std::string_view line = exposition.substr(0, eol);
    exposition.remove_prefix(eol == std::string_view::npos ? exposition.size() : eol + 1);
    if (line.empty() || line.front() == '#') {
      out += line;
    } else {
      // The metric name ends at its first '{' or space.
      const auto end = line.find_first_of("{ ");
      out += line.substr(0, end);
      if (end != std::string_view::npos && line[end] == '{') {
        out += '{' + label + (line[end + 1] == '}' ? "" : ",");
        out += line.substr(end + 1);
      } else {
        out += '{' + label + '}';
        if (end != std::string_view::npos) out += line.substr(end);
      }
    }
    if (eol != std::string_view::npos) out += '\n';
  }
  return out;
}

}  // namespace flushgate::core
