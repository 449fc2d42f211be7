#include "trellis/kernel/exec/event_loop.h"

namespace trellis::kernel::exec {
namespace {
thread_local bool tls_event_loop = false;
}  // namespace

void markEventLoopThread() {
  tls_event_loop = true;
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
