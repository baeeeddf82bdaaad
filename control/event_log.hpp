// event_log.hpp — being written (issue 6).
#pragma once
