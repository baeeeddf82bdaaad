// unix_address.cpp — see unix_address.hpp.
#include "core/unix_address.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace flushgate::core {

namespace {
// "/proc/self/fd/" + the widest descriptor number + "/".
constexpr std::size_t short_prefix = 14 + 10 + 1;

std::pair<std::string, std::string> split_path(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}
}  // namespace

std::string unix_address::check_length(const std::string& path) {
  if (path.size() <= max_path) return {};
  auto name = split_path(path).second;
  if (name.size() + short_prefix <= max_path) return {};
  return "file name \"" + name + "\" is " + std::to_string(name.size()) +
         " bytes; a UNIX socket address holds " + std::to_string(max_path) +
         " bytes, and a path over that is reached through its directory, which leaves " +
         std::to_string(max_path - short_prefix) + " bytes for the name";
}

boost::system::result<unix_address> unix_address::make(const std::string& path) {
  if (path.size() <= max_path) return unix_address(path, -1);
  if (!check_length(path).empty()) return boost::system::errc::make_error_code(boost::system::errc::filename_too_long);
  auto [dir, name] = split_path(path);
  // O_PATH: only a handle on the directory, no read permission needed.
  int fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return boost::system::error_code(errno, boost::system::system_category());
  return unix_address("/proc/self/fd/" + std::to_string(fd) + "/" + name, fd);
}

unix_address::unix_address(unix_address&& other) noexcept
    : socket_path_(std::move(other.socket_path_)), dir_fd_(std::exchange(other.dir_fd_, -1)) {}

unix_address& unix_address::operator=(unix_address&& other) noexcept {
  if (this != &other) {
    if (dir_fd_ >= 0) ::close(dir_fd_);
    socket_path_ = std::move(other.socket_path_);
    dir_fd_ = std::exchange(other.dir_fd_, -1);
  }
  return *this;
}

unix_address::~unix_address() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

}  // namespace flushgate::core
