// smtp_stream.cpp — see smtp_stream.hpp.
//
// Timeouts: one steady_timer per stream acts as a watchdog for the operation
// in progress (there is at most one read or write at a time in an SMTP
// session). When it fires it cancels the socket; the operation then ends with
// operation_aborted, which disarm() turns into timed_out.
#include "gateway/smtp_stream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <openssl/ssl.h>

namespace flushgate::gateway {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
}

smtp_stream::smtp_stream(tcp::socket socket)
    : socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      self_(std::make_shared<smtp_stream*>(this)) {
  error_code ec;
  remote_ = socket_.remote_endpoint(ec);
}

void smtp_stream::arm(duration timeout) {
  ++generation_;
  timed_out_ = false;
  timer_.expires_after(timeout);
  std::weak_ptr<smtp_stream*> weak = self_;
  timer_.async_wait([weak, generation = generation_](const error_code& ec) {
    if (ec) return;
    auto alive = weak.lock();
    if (!alive) return;
    smtp_stream& s = **alive;
    if (s.generation_ != generation) return;  // a later operation owns the timer now
    s.timed_out_ = true;
    error_code ignored;
    s.socket_.cancel(ignored);
  });
}

bool smtp_stream::disarm() {
  ++generation_;
  timer_.cancel();
  return timed_out_;
}

asio::awaitable<std::pair<error_code, std::size_t>> smtp_stream::read_some(
    asio::mutable_buffer buffer, duration timeout) {
  arm(timeout);
  error_code ec;
  std::size_t n = 0;
  if (tls_) {
    std::tie(ec, n) = co_await tls_->async_read_some(buffer, tuple_awaitable);
  } else {
    std::tie(ec, n) = co_await socket_.async_read_some(buffer, tuple_awaitable);
  }
  if (disarm() && ec) ec = asio::error::timed_out;
  co_return std::make_pair(ec, n);
}

asio::awaitable<error_code> smtp_stream::write_all(std::string_view data, duration timeout) {
  arm(timeout);
  error_code ec;
  auto buffer = asio::buffer(data.data(), data.size());
  if (tls_) {
    std::tie(ec, std::ignore) = co_await asio::async_write(*tls_, buffer, tuple_awaitable);
  } else {
    std::tie(ec, std::ignore) = co_await asio::async_write(socket_, buffer, tuple_awaitable);
  }
  if (disarm() && ec) ec = asio::error::timed_out;
  co_return ec;
}

asio::awaitable<error_code> smtp_stream::start_tls_server(asio::ssl::context& context,
                                                          duration timeout) {
  tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, context);
  arm(timeout);
  auto [ec] = co_await tls_->async_handshake(asio::ssl::stream_base::server, tuple_awaitable);
  if (disarm() && ec) ec = asio::error::timed_out;
  co_return ec;
}

asio::awaitable<error_code> smtp_stream::start_tls_client(asio::ssl::context& context,
                                                          const std::string& server_name,
                                                          duration timeout) {
  tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, context);
  if (!server_name.empty()) {
    SSL_set_tlsext_host_name(tls_->native_handle(), server_name.c_str());
  }
  arm(timeout);
  auto [ec] = co_await tls_->async_handshake(asio::ssl::stream_base::client, tuple_awaitable);
  if (disarm() && ec) ec = asio::error::timed_out;
  co_return ec;
}

std::string smtp_stream::tls_description() const {
  if (!tls_) return {};
  SSL* ssl = tls_->native_handle();
  std::string out = SSL_get_version(ssl);
  if (const char* cipher = SSL_get_cipher_name(ssl)) {
    out += ' ';
    out += cipher;
  }
  return out;
}

bool smtp_stream::tls_peer_verified() const {
  if (!tls_) return true;
  return SSL_get_verify_result(tls_->native_handle()) == X509_V_OK &&
         SSL_get0_peer_certificate(tls_->native_handle()) != nullptr;
}

void smtp_stream::cancel() {
  error_code ignored;
  socket_.cancel(ignored);
}

void smtp_stream::close() {
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

}  // namespace flushgate::gateway
