// readme_params_test.cpp — README.md's parameter table is the one the code renders.
//
// The config table (core/config_table.cpp) is the single definition of every
// key; this test keeps the README's copy from drifting. To refresh it:
//   build/control/flushgated --params  and paste between the markers.
#include "core/config.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace {

TEST(ReadmeParams, TableMatchesConfigTable) {
  std::ifstream in(FLUSHGATE_SOURCE_DIR "/README.md");
  ASSERT_TRUE(in) << "cannot read README.md";
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string readme = ss.str();
  const std::string begin = "<!-- params:begin -->\n";
  const std::string end = "<!-- params:end -->";
  auto b = readme.find(begin);
  auto e = readme.find(end);
  ASSERT_NE(b, std::string::npos) << "README.md lacks " << begin;
  ASSERT_NE(e, std::string::npos) << "README.md lacks " << end;
  std::string table = readme.substr(b + begin.size(), e - b - begin.size());
  EXPECT_EQ(table, flushgate::core::render_parameter_table_markdown())
      << "README.md's parameter table is stale: regenerate it with flushgated --params";
}

}  // namespace
