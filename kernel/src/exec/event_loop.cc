#include "trellis/kernel/exec/event_loop.h"

namespace trellis::kernel::exec {
namespace {
thread_local bool tls_event_loop = false;
thread_local boost::asio::io_context* tls_loop = nullptr;
}  // namespace

void markEventLoopThread(boost::asio::io_context* loop) {
  tls_event_loop = true;
  tls_loop = loop;
}

boost::asio::io_context* currentEventLoop() {
  return tls_loop;
}

bool onEventLoopThread() {
  return tls_event_loop;
}

EventLoopRules::EventLoopRules() : was_(tls_event_loop) {
  tls_event_loop = true;
}

EventLoopRules::~EventLoopRules() {
  tls_event_loop = was_;
}

}  // namespace trellis::kernel::exec
