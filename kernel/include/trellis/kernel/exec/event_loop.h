// Which threads are event loops. Host calls that block (egress, for one) refuse to run on
// them: one slow call there would stall every connection the loop serves.
//
//   std::thread([&] { exec::markEventLoopThread(); ioc.run(); });
//   if (exec::onEventLoopThread()) return Status::invalid("this call blocks");
#pragma once

namespace boost::asio {
class io_context;
}

namespace trellis::kernel::exec {

// `loop`: the io_context this thread runs, for work that registers with it (a worker
// plugin's channel read by the loop itself).
void markEventLoopThread(boost::asio::io_context* loop = nullptr);
bool onEventLoopThread();
// The io_context of the event loop running on this thread; null elsewhere (also under
// EventLoopRules alone).
boost::asio::io_context* currentEventLoop();

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
