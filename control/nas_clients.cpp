// nas_clients.cpp — see nas_clients.hpp.
#include "control/nas_clients.hpp"

#include "core/log.hpp"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace flushgate::control {

bool load_nas_clients(const std::string& path, linkmon::nas_table& out, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = path + ": cannot read the NAS clients file";
    return false;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & S_IROTH) != 0) {
    core::log_warning("{}: readable by everyone, but it holds RADIUS shared secrets (chmod 0600)", path);
  }
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    std::istringstream words(line);
    std::string source, secret, name, extra;
    words >> source >> secret >> name >> extra;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    if (secret.empty() || !extra.empty()) {
      error = where + "want SOURCE[/PREFIX] SECRET [NAME]";
      return false;
    }
    if (out.add(source, secret, name.empty() ? source : name)) {
      error = where + "\"" + source + "\" is not an address or address/prefix";
      return false;
    }
  }
  return true;
}

}  // namespace flushgate::control
