// chromium.cpp — being written (issue 6).
#include "tests/support/chromium.hpp"
