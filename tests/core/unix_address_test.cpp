// unix_address_test.cpp — tests core/unix_address.cpp: a socket path over
// sun_path's 107 bytes is bound and connected through its directory.
#include "core/unix_address.hpp"

#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace flushgate::core {
namespace {

// A socket of `type` bound (listen) or connected to `address`; -1 on failure.
int open_socket(const unix_address& address, bool listen) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::string& path = address.socket_path();
  if (path.size() >= sizeof a.sun_path) return -1;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = listen ? ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd, 1) == 0
                         : ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (ok) return fd;
  ::close(fd);
  return -1;
}

TEST(UnixAddress, ShortPathIsUsedAsIs) {
  auto a = unix_address::make("/run/flushgate/control.sock");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->socket_path(), "/run/flushgate/control.sock");
  EXPECT_EQ(unix_address::check_length("/run/flushgate/control.sock"), "");
}

TEST(UnixAddress, LongPathIsBoundAndConnectedThroughItsDirectory) {
  test::temp_dir dir("unix-address");
  std::filesystem::path deep = dir.path();
  while (deep.string().size() < 200) deep /= "a-rather-long-directory-name";
  std::filesystem::create_directories(deep);
  const std::string path = (deep / "control.sock").string();
  ASSERT_GT(path.size(), unix_address::max_path);
  EXPECT_EQ(unix_address::check_length(path), "") << "got the long path refused, want it usable";

  auto server_address = unix_address::make(path);
  ASSERT_TRUE(server_address.has_value()) << server_address.error().message();
  EXPECT_LE(server_address->socket_path().size(), unix_address::max_path);
  const int server = open_socket(*server_address, true);
  ASSERT_GE(server, 0) << "bind through " << server_address->socket_path() << ": " << std::strerror(errno);
  EXPECT_TRUE(std::filesystem::exists(path)) << "got no socket file at the full path, want one";

  auto client_address = unix_address::make(path);  // another descriptor, as the CLI has
  ASSERT_TRUE(client_address.has_value());
  const int client = open_socket(*client_address, false);
  EXPECT_GE(client, 0) << "connect through " << client_address->socket_path() << ": " << std::strerror(errno);
  if (client >= 0) ::close(client);
  ::close(server);
}

TEST(UnixAddress, NameTooLongEvenForTheShortFormIsRefused) {
  const std::string path = "/var/lib/flushgate/" + std::string(100, 'x') + ".sock";
  const std::string why = unix_address::check_length(path);
  EXPECT_NE(why.find("107"), std::string::npos) << "got \"" << why << "\", want the limit named";
  auto a = unix_address::make(path);
  ASSERT_FALSE(a.has_value()) << "got " << a->socket_path() << ", want an error";
  EXPECT_EQ(a.error(), boost::system::errc::filename_too_long);
}

TEST(UnixAddress, MissingDirectoryOfALongPathIsAnError) {
  const std::string path = "/nonexistent/" + std::string(120, 'd') + "/control.sock";
  auto a = unix_address::make(path);
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error(), boost::system::errc::no_such_file_or_directory) << "got " << a.error().message();
}

}  // namespace
}  // namespace flushgate::core
