// line_reader.cpp — see line_reader.hpp.
#include "gateway/inbound/line_reader.hpp"

#include <boost/asio/buffer.hpp>

namespace flushgate::gateway {

namespace asio = boost::asio;

asio::awaitable<bool> line_reader::flush(duration timeout) {
  if (out_.empty()) co_return true;
  error_ = co_await stream_.write_all(out_, timeout);
  out_.clear();
  co_return !error_;
}

asio::awaitable<bool> line_reader::fill(duration timeout) {
  // RFC 2920 §3.2: send all pending replies whenever the input buffer is empty.
  bool flushed = co_await flush(timeout);
  if (!flushed) co_return false;
  char buf[16 * 1024];
  auto [ec, n] = co_await stream_.read_some(asio::buffer(buf), timeout);
  if (ec) {
    error_ = ec;
    co_return false;
  }
  in_.append(buf, n);
  co_return true;
}

asio::awaitable<line_reader::status> line_reader::read_line(std::string& line, std::size_t limit,
                                                            duration timeout,
                                                            const long_line_test& may_be_long,
                                                            std::size_t long_limit) {
  bool discarding = false;
  std::size_t scan = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const std::size_t effective =
        long_limit > limit && may_be_long && may_be_long(in_) ? long_limit : limit;
    if (auto pos = in_.find("\r\n", scan); pos != std::string::npos) {
      bool too_long = discarding || pos + 2 > effective;
      if (!too_long) line.assign(in_, 0, pos);
      in_.erase(0, pos + 2);
      co_return too_long ? status::too_long : status::line;
    }
    if (in_.size() >= effective) {
      // No CRLF within the limit: the rest of this line is discarded up to
      // the next CRLF and never parsed as a command.
      discarding = true;
      in_.erase(0, in_.size() - 1);  // keep a trailing CR that may pair with LF
    }
    scan = in_.empty() ? 0 : in_.size() - 1;
    const duration left = std::max<duration>(deadline - std::chrono::steady_clock::now(), duration::zero());
    bool filled = co_await fill(left);
    if (!filled) co_return status::closed;
  }
}

}  // namespace flushgate::gateway
