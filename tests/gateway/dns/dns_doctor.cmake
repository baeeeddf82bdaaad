# dns_doctor_test: gateway/dns/dns_doctor against a private nsd on 127.0.0.1
# (tests/support/nsd_server, zone tests/data/dns/doctor/doctor.test.zone with
# one subdomain per mistake). Skips when /usr/sbin/nsd is absent. Included
# from tests/gateway/dns/CMakeLists.txt.
flushgate_add_test(dns_doctor_test SOURCES dns_doctor_test.cpp
  LIBS flushgate::gateway_dns flushgate::test_support)
