// http_api_test.cpp — being written (issues 6 and 7).
