# mx_resolver_test: gateway/dns/mx_resolver against a private nsd on 127.0.0.1
# (tests/support/nsd_server, zone tests/data/dns/mx.test.zone). Skips when
# /usr/sbin/nsd is absent. Included from tests/gateway/dns/CMakeLists.txt.
flushgate_add_test(mx_resolver_test SOURCES mx_resolver_test.cpp
  LIBS flushgate::gateway_dns flushgate::test_support)
