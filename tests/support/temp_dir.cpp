// temp_dir.cpp — mkdtemp on construction, remove_all on destruction.
#include "tests/support/temp_dir.hpp"

#include <stdlib.h>

#include <cerrno>
#include <system_error>
#include <utility>
#include <vector>

namespace flushgate::test {

temp_dir::temp_dir(const std::string& prefix) {
  std::string pattern = "/tmp/" + prefix + ".XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
  }
  path_ = buffer.data();
}

temp_dir::~temp_dir() {
  if (path_.empty()) {
    return;
  }
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

temp_dir::temp_dir(temp_dir&& other) noexcept : path_(std::exchange(other.path_, {})) {}

}  // namespace flushgate::test
