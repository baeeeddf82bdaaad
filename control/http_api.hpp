// http_api.hpp — being written (issue 6).
#pragma once
