// blocking.hpp — run blocking work (SQLite, fsync, process spawning) off the
// network thread and resume the calling coroutine on its own executor.
//
// Purpose: the network thread never waits on the disk. A coroutine writes
//   auto ids = co_await core::run_blocking(store_executor, [&] { return ...; });
// and is resumed, on the executor it was running on, with the lambda's result.
// Errors: an exception thrown by the function is rethrown in the caller.
// Limitations: the operation cannot be cancelled once posted — by design, a
// durable step is never abandoned halfway (STYLE.md, Sessions).
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

namespace flushgate::core {

namespace detail {
// Posts `body` to `worker`; completes with the exception it threw, if any.
template <typename Executor, typename Body>
boost::asio::awaitable<void> post_and_wait(Executor worker, Body body) {
  auto home = co_await boost::asio::this_coro::executor;
  co_await boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&,
                                       void(std::exception_ptr)>(
      [worker, home, &body](auto handler) mutable {
        boost::asio::post(worker, [home, &body, handler = std::move(handler)]() mutable {
          std::exception_ptr error;
          try {
            body();
          } catch (...) {
            error = std::current_exception();
          }
          boost::asio::post(home, [handler = std::move(handler), error]() mutable {
            std::move(handler)(error);
          });
        });
      },
      boost::asio::use_awaitable);
}
}  // namespace detail

// Runs f() on `worker` and returns its result to the calling coroutine.
// The coroutine frame stays suspended (and alive) until f has finished, so f
// may capture the caller's locals by reference.
template <typename Executor, typename F>
boost::asio::awaitable<std::invoke_result_t<F&>> run_blocking(Executor worker, F f) {
  using result_type = std::invoke_result_t<F&>;
  if constexpr (std::is_void_v<result_type>) {
    co_await detail::post_and_wait(worker, [&] { f(); });
  } else {
    std::optional<result_type> out;
    co_await detail::post_and_wait(worker, [&] { out.emplace(f()); });
    co_return std::move(*out);
  }
}

}  // namespace flushgate::core
