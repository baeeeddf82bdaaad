# smtp_client_test: gateway/flush/smtp_client against scripted fake servers on
# 127.0.0.1 (plain, STARTTLS and implicit TLS; certificates made with the
# openssl command) and against the real Postfix smtp-sink with its fault
# flags (skips when /usr/sbin/smtp-sink is absent). Included from
# tests/gateway/flush/CMakeLists.txt.
flushgate_add_test(smtp_client_test SOURCES smtp_client_test.cpp
  LIBS flushgate::gateway_flush flushgate::test_support)
