// unix_address.hpp — a UNIX socket address for a path of any length.
//
// Purpose: bind() and connect() take a path of at most 107 bytes (sun_path
// is 108 with its NUL), but control_socket lives under data_dir, which may
// be deeper. A path that fits is used as is; a longer one is reached through
// an O_PATH descriptor of its directory, as "/proc/self/fd/N/NAME" (Linux
// resolves the descriptor like the directory itself, for bind and connect
// alike). The object keeps the descriptor open while the caller binds or
// connects.
// Security: opens the directory O_PATH (no read access needed); the
// descriptor is close-on-exec. The socket file is created where the full
// path says, with the caller's umask.
// Errors: make() returns errc::filename_too_long when even the short form
// does not fit (the file's own name is over about 85 bytes), or the errno of
// opening the directory (e.g. no_such_file_or_directory). check_length()
// says the same about the length without touching the file system.
// Limitations: needs /proc mounted (the short form only).
#pragma once

#include <boost/system/result.hpp>

#include <cstddef>
#include <string>

namespace flushgate::core {

class unix_address {
 public:
  // The longest path bind()/connect() take (sizeof sockaddr_un::sun_path - 1).
  static constexpr std::size_t max_path = 107;

  // A usable address for `path`: the path itself when it fits, else the short form.
  static boost::system::result<unix_address> make(const std::string& path);
  // Whether some form of `path` fits; "" when it does, else why not (names the limit).
  static std::string check_length(const std::string& path);

  unix_address(unix_address&& other) noexcept;
  unix_address& operator=(unix_address&& other) noexcept;
  unix_address(const unix_address&) = delete;
  unix_address& operator=(const unix_address&) = delete;
  ~unix_address();

  // What to hand to bind()/connect(); valid while this object lives.
  const std::string& socket_path() const noexcept { return socket_path_; }

 private:
  unix_address(std::string socket_path, int dir_fd) : socket_path_(std::move(socket_path)), dir_fd_(dir_fd) {}

  std::string socket_path_;
  int dir_fd_ = -1;
};

}  // namespace flushgate::core
