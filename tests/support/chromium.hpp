// chromium.hpp — being written (issue 6).
#pragma once
