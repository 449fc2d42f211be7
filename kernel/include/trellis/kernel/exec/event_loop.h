// Which threads are event loops. Host calls that block (egress, for one) refuse to run on
// them: one slow call there would stall every connection the loop serves.
//
//   std::thread([&] { exec::markEventLoopThread(); ioc.run(); });
//   if (exec::onEventLoopThread()) return Status::invalid("this call blocks");
#pragma once

namespace trellis::kernel::exec {

void markEventLoopThread();
bool onEventLoopThread();

// While it lives, the current thread counts as an event loop: work a loop handed to another
// thread (the route of a plugin in a worker process) is refused what the loop would refuse,
// so a plugin behaves the same in and out of process.
class EventLoopRules {
 public:
  EventLoopRules();
  ~EventLoopRules();
  EventLoopRules(const EventLoopRules&) = delete;
  EventLoopRules& operator=(const EventLoopRules&) = delete;

 private:
  bool was_;
};

}  // namespace trellis::kernel::exec
