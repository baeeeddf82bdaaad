# The status page renderer (control/status_page.cpp), in unit tests and in
# headless Chromium against a rendered file. The target is not called
# status_page_test: tests/integration has a target of that name (the same
# page served by the running daemon).
flushgate_add_test(control_status_page_test SOURCES status_page_test.cpp
  LIBS flushgate::control flushgate::test_support)
