// chromium.hpp — headless Chromium for tests: load one page, dump its DOM
// and take a screenshot, then make sure the browser is gone.
//
// Purpose: browser tests (the status page) look at a page the way an
// operator's browser does: scripts run, CSS applies, the DOM that
// --dump-dom prints is the page after loading. A screenshot is kept for a
// human to look at.
// Security: test-only. Runs /usr/bin/chromium with exactly the flags a
// machine without network needs (--headless --no-sandbox --disable-gpu
// --no-first-run --disable-background-networking --disable-component-update
// --disable-sync), a fresh --user-data-dir and HOME in a private temp dir,
// and the one URL it is given (a file:// page or 127.0.0.1). The browser
// runs in its own process group: after the hard timeout it is killed
// (SIGKILL to the group); after it exits, any of its processes still in
// that group or naming its private dir (crashpad's handler starts its own
// session) are killed by PID.
// Errors: the browser's failure is a value (exit code, timed_out, its
// stderr); only a failure to start the program throws std::system_error
// (a start-up failure of the test).
// Limitations: the screenshot is the viewport (--window-size), not the
// whole page. Debian's /usr/bin/chromium is a wrapper script that adds
// the flags of /etc/chromium.d/.
// See also: process.hpp, chromium(1), tests/integration/status_page_test.cpp.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace flushgate::test {

struct browser_request {
  std::string url;                        // file:///... or http://127.0.0.1:PORT/...
  int width = 1280;                       // --window-size=W,H
  int height = 800;
  bool dump_dom = true;                   // --dump-dom: the DOM after load, on stdout
  std::filesystem::path screenshot;       // --screenshot=PATH; empty: none
  std::chrono::milliseconds timeout = std::chrono::seconds(90);  // hard limit for the whole run
};

struct browser_result {
  int exit_code = -1;               // the browser's exit status; 137 after the timeout kill
  bool timed_out = false;           // the timeout expired and the browser was killed
  std::string dom;                  // what --dump-dom printed ("" without it)
  bool screenshot_written = false;  // the PNG exists and starts with the PNG signature
  std::string log;                  // the browser's stderr, for failure messages
};

constexpr const char* chromium_path = "/usr/bin/chromium";

// The flags every run gets, in order (without --user-data-dir, which is fresh per run).
std::vector<std::string> chromium_flags();
// "" when chromium can run here; otherwise why not, for GTEST_SKIP().
std::string chromium_missing_reason();
// Loads request.url in a fresh headless browser and returns what it gave back.
browser_result run_chromium(const browser_request& request);

}  // namespace flushgate::test

// In a test body: skips the test with the reason when chromium cannot run.
#define FLUSHGATE_SKIP_WITHOUT_CHROMIUM()                                         \
  do {                                                                            \
    if (const std::string why_ = ::flushgate::test::chromium_missing_reason();    \
        !why_.empty())                                                            \
      GTEST_SKIP() << why_;                                                       \
  } while (false)
