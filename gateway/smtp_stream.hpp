// smtp_stream.hpp — one TCP connection, plain or TLS, with a timeout on every
// operation. Shared by the SMTP server, the SMTP client and the ODMR server,
// so that a turned-around ODMR connection (TLS kept) can be handed to the
// client unchanged.
//
// Purpose: read_some / write_all with a per-call timeout; switch to TLS in
// either role (STARTTLS, or implicit TLS from the first byte).
// Security: every read and write has a deadline, so a silent or slow peer is
// cut off (ARCHITECTURE.md invariant 7). The caller bounds how much it buffers.
// Errors: results carry boost::system::error_code; a timeout is
// boost::asio::error::timed_out; cancel() makes the pending operation end
// with operation_aborted.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace flushgate::gateway {

class smtp_stream {
 public:
  using tcp = boost::asio::ip::tcp;
  using duration = std::chrono::steady_clock::duration;

  explicit smtp_stream(tcp::socket socket);
  smtp_stream(const smtp_stream&) = delete;
  smtp_stream& operator=(const smtp_stream&) = delete;

  // Reads what is available (at least one byte) into `buffer`.
  boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read_some(
      boost::asio::mutable_buffer buffer, duration timeout);
  // Writes all of `data`.
  boost::asio::awaitable<boost::system::error_code> write_all(std::string_view data,
                                                             duration timeout);
  // TLS handshake as server (after STARTTLS's 220, or at once on an implicit-TLS port).
  boost::asio::awaitable<boost::system::error_code> start_tls_server(
      boost::asio::ssl::context& context, duration timeout);
  // TLS handshake as client; `server_name` goes into SNI when non-empty.
  boost::asio::awaitable<boost::system::error_code> start_tls_client(
      boost::asio::ssl::context& context, const std::string& server_name, duration timeout);

  bool tls_active() const { return tls_ != nullptr; }
  // The negotiated protocol and cipher, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"; "" without TLS.
  std::string tls_description() const;
  // Certificate verification result of the last client handshake (true without TLS).
  bool tls_peer_verified() const;

  // Ends the pending read/write with operation_aborted (used on shutdown).
  void cancel();
  // Closes the socket; further operations fail.
  void close();

  tcp::socket& socket() { return socket_; }
  const tcp::endpoint& remote_endpoint() const { return remote_; }

 private:
  // Arms the watchdog for one operation; returns the generation to check.
  void arm(duration timeout);
  bool disarm();  // true when the watchdog had fired for this operation

  tcp::socket socket_;
  tcp::endpoint remote_;
  std::unique_ptr<boost::asio::ssl::stream<tcp::socket&>> tls_;
  boost::asio::steady_timer timer_;
  std::uint64_t generation_ = 0;
  bool timed_out_ = false;
  // Handlers of the watchdog hold a weak reference, so a timer completion that
  // is already queued when the stream dies touches nothing.
  std::shared_ptr<smtp_stream*> self_;
};

}  // namespace flushgate::gateway
