// temp_dir.hpp — a private directory under /tmp that removes itself.
//
// Purpose: every test that touches the disk (a spool, a Postfix instance, a
// config file) gets its own directory and leaves nothing behind.
// Security: mkdtemp(3) creates the directory with mode 0700 and an
// unpredictable name; nothing outside the test uses it.
// Errors: the constructor throws std::system_error when mkdtemp fails (a
// start-up failure); the destructor ignores removal errors.
// See also: process.hpp, postfix_instance.hpp.
#pragma once

#include <filesystem>
#include <string>

namespace flushgate::test {

class temp_dir {
 public:
  // Creates /tmp/<prefix>.XXXXXX (mode 0700).
  explicit temp_dir(const std::string& prefix = "flushgate-test");
  // Removes the directory and everything in it.
  ~temp_dir();

  temp_dir(temp_dir&& other) noexcept;
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  temp_dir& operator=(temp_dir&&) = delete;

  // The directory's absolute path; empty after a move.
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace flushgate::test
