// link_flap_test.cpp — being written (issues 6 and 7).
