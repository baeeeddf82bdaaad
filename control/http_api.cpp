// http_api.cpp — being written (issue 6).
#include "control/http_api.hpp"
