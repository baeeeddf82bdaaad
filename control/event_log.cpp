// event_log.cpp — being written (issue 6).
#include "control/event_log.hpp"
