// status_page.cpp — being written (issue 6).
#include "control/status_page.hpp"
