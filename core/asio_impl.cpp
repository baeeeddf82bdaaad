// asio_impl.cpp — the one translation unit that compiles Boost.Asio and its
// SSL support (BOOST_ASIO_SEPARATE_COMPILATION is set on flushgate::core), so
// that every other file only includes the declarations.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
