// Which threads are event loops. Host calls that block (egress, for one) refuse to run on
// them: one slow call there would stall every connection the loop serves.
//
//   std::thread([&] { exec::markEventLoopThread(); ioc.run(); });
//   if (exec::onEventLoopThread()) return Status::invalid("this call blocks");
#pragma once

namespace trellis::kernel::exec {

void markEventLoopThread();
bool onEventLoopThread();

}  // namespace trellis::kernel::exec
