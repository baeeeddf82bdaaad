// sasl.cpp — see sasl.hpp.
//
// HMAC-MD5(K, m) = MD5((K ^ opad) || MD5((K ^ ipad) || m)). Both pad blocks
// are exactly one MD5 block (64 octets), so the MD5 state after each is all
// HMAC needs of the key: resume from the inner state, feed m, finish; resume
// from the outer state, feed the inner digest, finish.
#include "gateway/inbound/sasl.hpp"

// OpenSSL 3 marks the low-level MD5 API deprecated; it is the only way to
// save and resume an MD5 state, which is the point of the stored form.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/md5.h>
#include <openssl/rand.h>

#include <array>
#include <cctype>
#include <cstdint>
#include <ctime>

namespace flushgate::gateway {

namespace {

constexpr std::string_view prefix = "hmac-md5:";
using md5_words = std::array<std::uint32_t, 4>;

struct key_schedule {
  md5_words inner;
  md5_words outer;
};

md5_words pad_state(const std::array<unsigned char, 64>& key, unsigned char pad) {
  std::array<unsigned char, 64> block;
  for (std::size_t i = 0; i < block.size(); ++i) block[i] = key[i] ^ pad;
  MD5_CTX ctx;
  MD5_Init(&ctx);
  MD5_Update(&ctx, block.data(), block.size());
  return {ctx.A, ctx.B, ctx.C, ctx.D};
}

key_schedule schedule_of(std::string_view password) {
  std::array<unsigned char, 64> key{};
  if (password.size() > key.size()) {
    // RFC 2104: keys longer than the block are hashed first.
    MD5(reinterpret_cast<const unsigned char*>(password.data()), password.size(), key.data());
  } else {
    std::copy(password.begin(), password.end(), key.begin());
  }
  return {pad_state(key, 0x36), pad_state(key, 0x5c)};
}

// MD5 over `data`, resumed from a state that has consumed one 64-octet block.
std::array<unsigned char, 16> resume_md5(const md5_words& state, std::string_view data) {
  MD5_CTX ctx;
  MD5_Init(&ctx);
  ctx.A = state[0];
  ctx.B = state[1];
  ctx.C = state[2];
  ctx.D = state[3];
  ctx.Nl = 512;  // bits already hashed: the pad block
  ctx.Nh = 0;
  MD5_Update(&ctx, data.data(), data.size());
  std::array<unsigned char, 16> out;
  MD5_Final(out.data(), &ctx);
  return out;
}

std::array<unsigned char, 16> hmac(const key_schedule& k, std::string_view message) {
  auto inner = resume_md5(k.inner, message);
  return resume_md5(k.outer, std::string_view(reinterpret_cast<const char*>(inner.data()), inner.size()));
}

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Words are serialised little-endian, four octets each, inner then outer.
std::string serialise(const key_schedule& k) {
  std::array<unsigned char, 32> raw;
  std::size_t i = 0;
  for (const auto* words : {&k.inner, &k.outer}) {
    for (std::uint32_t w : *words) {
      for (int b = 0; b < 4; ++b) raw[i++] = static_cast<unsigned char>(w >> (8 * b));
    }
  }
  return std::string(prefix) + hex(raw.data(), raw.size());
}

std::optional<key_schedule> parse(std::string_view stored) {
  if (!is_credential(stored)) return std::nullopt;
  stored.remove_prefix(prefix.size());
  key_schedule k{};
  std::size_t pos = 0;
  for (auto* words : {&k.inner, &k.outer}) {
    for (std::uint32_t& w : *words) {
      w = 0;
      for (int b = 0; b < 4; ++b, pos += 2) {
        auto octet = static_cast<std::uint32_t>(hex_value(stored[pos]) * 16 + hex_value(stored[pos + 1]));
        w |= octet << (8 * b);
      }
    }
  }
  return k;
}

bool equal_constant_time(const void* a, const void* b, std::size_t n) {
  return CRYPTO_memcmp(a, b, n) == 0;
}

}  // namespace

std::string make_credential(std::string_view password) { return serialise(schedule_of(password)); }

bool is_credential(std::string_view stored) {
  if (stored.size() != prefix.size() + 64 || stored.substr(0, prefix.size()) != prefix) return false;
  for (char c : stored.substr(prefix.size())) {
    if (hex_value(c) < 0) return false;
  }
  return true;
}

bool verify_cram_md5(std::string_view stored, std::string_view challenge,
                     std::string_view digest_hex) {
  auto k = parse(stored);
  if (!k || digest_hex.size() != 32) return false;
  std::array<unsigned char, 16> given;
  for (std::size_t i = 0; i < given.size(); ++i) {
    int hi = hex_value(digest_hex[2 * i]), lo = hex_value(digest_hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    given[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  auto want = hmac(*k, challenge);
  return equal_constant_time(want.data(), given.data(), want.size());
}

bool verify_password(std::string_view stored, std::string_view password) {
  std::string computed = make_credential(password);
  return stored.size() == computed.size() &&
         equal_constant_time(stored.data(), computed.data(), computed.size());
}

std::string make_cram_challenge(std::string_view hostname) {
  unsigned char random[8];
  RAND_bytes(random, sizeof random);
  return "<" + hex(random, sizeof random) + "." + std::to_string(std::time(nullptr)) + "@" +
         std::string(hostname) + ">";
}

std::optional<std::string> base64_decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int pads = 0;
    for (int j = 0; j < 4; ++j) {
      char c = text[i + static_cast<std::size_t>(j)];
      if (c == '=' && last && j >= 2) {
        v[j] = 0;
        ++pads;
        continue;
      }
      if (pads > 0) return std::nullopt;  // data after '='
      v[j] = value(c);
      if (v[j] < 0) return std::nullopt;
    }
    std::uint32_t n = (static_cast<std::uint32_t>(v[0]) << 18) | (static_cast<std::uint32_t>(v[1]) << 12) |
                      (static_cast<std::uint32_t>(v[2]) << 6) | static_cast<std::uint32_t>(v[3]);
    out += static_cast<char>(n >> 16);
    if (pads < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pads < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

std::string base64_encode(std::string_view data) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    std::uint32_t n = (static_cast<unsigned char>(data[i]) << 16) |
                      (static_cast<unsigned char>(data[i + 1]) << 8) |
                      static_cast<unsigned char>(data[i + 2]);
    out += alphabet[n >> 18];
    out += alphabet[(n >> 12) & 63];
    out += alphabet[(n >> 6) & 63];
    out += alphabet[n & 63];
  }
  if (std::size_t rest = data.size() - i; rest > 0) {
    std::uint32_t n = static_cast<unsigned char>(data[i]) << 16;
    if (rest == 2) n |= static_cast<unsigned char>(data[i + 1]) << 8;
    out += alphabet[n >> 18];
    out += alphabet[(n >> 12) & 63];
    out += rest == 2 ? alphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

sasl_exchange::sasl_exchange(credential_lookup lookup, std::string hostname, bool tls_active)
    : lookup_(std::move(lookup)), hostname_(std::move(hostname)), tls_(tls_active) {}

std::string sasl_exchange::mechanisms(bool tls_active) {
  return tls_active ? "CRAM-MD5 PLAIN LOGIN" : "CRAM-MD5";
}

sasl_exchange::step sasl_exchange::finish(bool ok, const std::string& user) {
  state_ = state::finished;
  step s;
  s.done = true;
  s.success = ok;
  if (ok) {
    s.code = 235;
    s.enhanced = "2.7.0";
    s.text = "Authentication successful";
    s.user = user;
  } else {
    s.code = 535;
    s.enhanced = "5.7.8";
    s.text = "Authentication credentials invalid";
    s.user = user;  // who was tried, for the log; never a sign of success
  }
  return s;
}

sasl_exchange::step sasl_exchange::check_plain(std::string_view decoded) {
  // RFC 4616: [authzid] NUL authcid NUL passwd, each at most 255 octets.
  auto first = decoded.find('\0');
  auto second = first == std::string_view::npos ? first : decoded.find('\0', first + 1);
  if (second == std::string_view::npos) {
    state_ = state::finished;
    return {501, "5.5.2", "Malformed PLAIN response", true, false, {}};
  }
  std::string_view authz = decoded.substr(0, first);
  std::string user(decoded.substr(first + 1, second - first - 1));
  std::string_view password = decoded.substr(second + 1);
  if (authz.size() > 255 || user.size() > 255 || password.size() > 255 ||
      (!authz.empty() && authz != user)) {
    return finish(false, user);
  }
  return finish(verify_password(lookup_(user), password), user);
}

sasl_exchange::step sasl_exchange::start(std::string_view arg) {
  auto space = arg.find(' ');
  std::string mechanism(arg.substr(0, space));
  for (char& c : mechanism) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string_view initial = space == std::string_view::npos ? std::string_view() : arg.substr(space + 1);
  const bool has_initial = space != std::string_view::npos;
  state_ = state::finished;
  if (mechanism == "CRAM-MD5") {
    if (has_initial) return {501, "5.7.0", "CRAM-MD5 takes no initial response", true, false, {}};
    challenge_ = make_cram_challenge(hostname_);
    state_ = state::cram;
    return {334, "", base64_encode(challenge_), false, false, {}};
  }
  if ((mechanism == "PLAIN" || mechanism == "LOGIN") && !tls_) {
    return {504, "5.5.4", "Mechanism available only under TLS (STARTTLS first)", true, false, {}};
  }
  if (mechanism == "PLAIN") {
    if (!has_initial) {
      state_ = state::plain;
      return {334, "", "", false, false, {}};
    }
    if (initial == "=") return check_plain("");
    auto decoded = base64_decode(initial);
    if (!decoded) return {501, "5.5.2", "Cannot decode the response", true, false, {}};
    return check_plain(*decoded);
  }
  if (mechanism == "LOGIN") {
    if (has_initial) {
      auto user = base64_decode(initial);
      if (!user) return {501, "5.5.2", "Cannot decode the response", true, false, {}};
      login_user_ = *user;
      state_ = state::login_password;
      return {334, "", base64_encode("Password:"), false, false, {}};
    }
    state_ = state::login_user;
    return {334, "", base64_encode("Username:"), false, false, {}};
  }
  return {504, "5.5.4", "Unrecognized authentication type", true, false, {}};
}

sasl_exchange::step sasl_exchange::respond(std::string_view line) {
  if (state_ == state::idle || state_ == state::finished) {
    return {503, "5.5.1", "No authentication in progress", true, false, {}};
  }
  if (line == "*") {
    state_ = state::finished;
    return {501, "5.7.0", "Authentication cancelled", true, false, {}};
  }
  auto decoded = base64_decode(line);
  if (!decoded) {
    state_ = state::finished;
    return {501, "5.5.2", "Cannot decode the response", true, false, {}};
  }
  switch (state_) {
    case state::cram: {
      // RFC 2195: "user SP 32-hex-digest".
      auto space = decoded->rfind(' ');
      if (space == std::string::npos) return finish(false, "");
      std::string user = decoded->substr(0, space);
      return finish(verify_cram_md5(lookup_(user), challenge_, decoded->substr(space + 1)), user);
    }
    case state::plain:
      return check_plain(*decoded);
    case state::login_user:
      login_user_ = *decoded;
      state_ = state::login_password;
      return {334, "", base64_encode("Password:"), false, false, {}};
    case state::login_password:
      return finish(verify_password(lookup_(login_user_), *decoded), login_user_);
    case state::idle:
    case state::finished:
      break;
  }
  return finish(false, "");
}

}  // namespace flushgate::gateway
