# dsn_test: golden-file and structure tests for queue/dsn.cpp.
# Included from tests/queue/CMakeLists.txt. Regenerate the golden files in
# tests/data/dsn/ with: FLUSHGATE_UPDATE_GOLDEN=1 <build>/tests/queue/dsn_test
flushgate_add_test(dsn_test SOURCES dsn_test.cpp LIBS flushgate::queue)
