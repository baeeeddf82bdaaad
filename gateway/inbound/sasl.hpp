// sasl.hpp — customer credentials and the SASL mechanisms flushgate offers
// (CRAM-MD5 everywhere; PLAIN and LOGIN only under TLS).
//
// Purpose: a customer's password is never stored. What is stored is the
// HMAC-MD5 key schedule of RFC 2104 — the MD5 state after the inner pad
// block and after the outer pad block ("hmac-md5:" + 64 hex digits), the
// form Dovecot keeps for CRAM-MD5. It verifies a CRAM-MD5 response (RFC
// 2195) and a plaintext password (AUTH PLAIN/LOGIN) alike, without holding
// anything from which the password could be read back directly.
// Security: comparisons are constant-time. Limitations: the key schedule is
// password-equivalent for CRAM-MD5 (anyone holding it can answer a
// challenge), as with every CRAM-MD5 server; the store keeps it 0600.
// Errors: decoders return std::nullopt on bad input; verifiers return false.
// See also: RFC 2104, RFC 2195, RFC 4616, RFC 4954 §4.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace flushgate::gateway {

// The stored form of `password`: "hmac-md5:" + 64 lower-case hex digits.
std::string make_credential(std::string_view password);
bool is_credential(std::string_view stored);

// CRAM-MD5: true when digest_hex (32 hex digits, any case) is
// HMAC-MD5(password, challenge) for the password behind `stored`.
bool verify_cram_md5(std::string_view stored, std::string_view challenge,
                     std::string_view digest_hex);
// PLAIN/LOGIN: true when `password` is the one behind `stored`.
bool verify_password(std::string_view stored, std::string_view password);

// A fresh challenge "<random.unixtime@hostname>" (RFC 2195 §2: msg-id form).
std::string make_cram_challenge(std::string_view hostname);

// Base64 (RFC 4648) as AUTH needs it: strict — characters outside the
// alphabet, or '=' anywhere but at the end, are errors (RFC 4954 §4).
std::optional<std::string> base64_decode(std::string_view text);
std::string base64_encode(std::string_view data);

// One AUTH exchange (RFC 4954) as a pure state machine: the session reads
// lines and writes the replies it returns. Mechanisms: CRAM-MD5 always;
// PLAIN and LOGIN only under TLS (RFC 4954 §4: no plaintext passwords in
// the clear). Every reply is a single line (fetchmail reads one line per
// step; FETCHMAIL.md §d1) and a challenge is "334 " + base64, space kept.
class sasl_exchange {
 public:
  // The stored credential of `user` ("" when the user is unknown or has none).
  using credential_lookup = std::function<std::string(std::string_view user)>;

  struct step {
    int code = 0;              // 334 (continue), 235, 501, 504, 535, ...
    std::string enhanced;      // "" for 334
    std::string text;          // for 334: the base64 challenge (may be empty)
    bool done = false;         // the exchange is over (success or failure)
    bool success = false;
    std::string user;          // the authenticated user on success; the one tried on 535
  };

  sasl_exchange(credential_lookup lookup, std::string hostname, bool tls_active);

  // The mechanisms to advertise: "CRAM-MD5", or "CRAM-MD5 PLAIN LOGIN" under TLS.
  static std::string mechanisms(bool tls_active);

  // `arg` is what follows "AUTH ": a mechanism and maybe an initial response.
  step start(std::string_view arg);
  // The client's next line (without CRLF); "*" cancels.
  step respond(std::string_view line);

 private:
  enum class state { idle, cram, plain, login_user, login_password, finished };
  step finish(bool ok, const std::string& user);
  step check_plain(std::string_view decoded);

  credential_lookup lookup_;
  std::string hostname_;
  bool tls_;
  state state_ = state::idle;
  std::string challenge_;
  std::string login_user_;
};

}  // namespace flushgate::gateway
