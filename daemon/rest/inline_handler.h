// A one-shot completion handler, void(boost::system::error_code), held in place: no allocation.
// For a read that completes into a handler chosen after it started (RestUpstreamConnection's
// idle-watch read, taken over by the exchange's answer read).
//
//   InlineHandler<192> pending;
//   pending.Emplace([self](boost::system::error_code ec) { ... });   // larger: compile error
//   pending(ec);   // calls it once and empties `pending` (the handler may Emplace the next)
//
// Thread-safety: none.
#ifndef QPOOL_DAEMON_REST_INLINE_HANDLER_H_
#define QPOOL_DAEMON_REST_INLINE_HANDLER_H_

#include <boost/system/error_code.hpp>
#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace qpool::rest {

template <size_t kBytes>
class InlineHandler {
 public:
  InlineHandler() = default;
  InlineHandler(const InlineHandler&) = delete;
  InlineHandler& operator=(const InlineHandler&) = delete;
  ~InlineHandler() { Reset(); }

  explicit operator bool() const { return invoke_ != nullptr; }

  // Holds `handler` (replacing, unrun, the one held).
  template <class Handler>
  void Emplace(Handler&& handler) {
    using Held = std::decay_t<Handler>;
    static_assert(sizeof(Held) <= kBytes, "the handler does not fit InlineHandler's storage");
    static_assert(alignof(Held) <= alignof(std::max_align_t), "over-aligned handler");
    Reset();
    new (storage_) Held(std::forward<Handler>(handler));
    invoke_ = [](void* storage, const boost::system::error_code& ec) {
      Held* held = std::launder(static_cast<Held*>(storage));
      Held local(std::move(*held));
      held->~Held();
      local(ec);
    };
    destroy_ = [](void* storage) { std::launder(static_cast<Held*>(storage))->~Held(); };
  }

  // Runs the handler held, once; this is empty from its start. No-op when empty.
  void operator()(const boost::system::error_code& ec) {
    void (*invoke)(void*, const boost::system::error_code&) = invoke_;
    if (invoke == nullptr) return;
    invoke_ = nullptr;
    destroy_ = nullptr;
    invoke(storage_, ec);
  }

  // Destroys the handler held, unrun.
  void Reset() {
    void (*destroy)(void*) = destroy_;
    if (destroy == nullptr) return;
    invoke_ = nullptr;
    destroy_ = nullptr;
    destroy(storage_);
  }

 private:
  alignas(std::max_align_t) unsigned char storage_[kBytes];
  void (*invoke_)(void*, const boost::system::error_code&) = nullptr;
  void (*destroy_)(void*) = nullptr;
};

}  // namespace qpool::rest

#endif  // QPOOL_DAEMON_REST_INLINE_HANDLER_H_
