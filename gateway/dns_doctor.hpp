// dns_doctor.hpp — being written (issue 6).
#pragma once
