// dns_doctor.cpp — being written (issue 6).
#include "gateway/dns_doctor.hpp"
