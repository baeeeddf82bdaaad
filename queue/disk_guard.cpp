// disk_guard.cpp — see disk_guard.hpp.
#include "queue/disk_guard.hpp"

#include <sys/statvfs.h>

namespace flushgate::queue {

bool disk_guard::refresh() {
  struct statvfs st {};
  if (statvfs(dir_.c_str(), &st) != 0) {
    free_.store(0);
  } else {
    // f_bavail: what an unprivileged writer may use; the daemon may run as one.
    free_.store(static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize);
  }
  return low();
}

}  // namespace flushgate::queue
