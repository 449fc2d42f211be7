#include "trellis/kernel/events/event_bus.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <utility>

namespace trellis::kernel::events {

EventBus::EventBus(size_t max_queued) : max_queued_(max_queued) {
  thread_ = std::thread([this] { run(); });
}

EventBus::~EventBus() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t EventBus::subscribe(std::string pattern, Subscriber fn) {
  std::lock_guard lock(mu_);
  uint64_t id = next_id_++;
  subs_.push_back(
      std::make_shared<Subscription>(Subscription{id, std::move(pattern), std::move(fn)}));
  return id;
}

void EventBus::unsubscribe(uint64_t id) {
  std::unique_lock lock(mu_);
  auto it = std::find_if(subs_.begin(), subs_.end(), [&](const auto& s) { return s->id == id; });
  if (it == subs_.end()) return;
  std::shared_ptr<Subscription> victim = std::move(*it);
  victim->active = false;
  subs_.erase(it);
  // Plugins unsubscribe before they are unloaded: wait out a call in progress so no code
  // of theirs runs after we return. On the dispatcher thread that call is our caller.
  if (!onDispatcherThread()) idle_cv_.wait(lock, [&] { return calling_ != id; });
  lock.unlock();
  victim.reset();  // the callback's captures may run arbitrary code: not under our lock
}

bool EventBus::publish(Event event, Delivery delivery) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    // Nobody subscribes to the topic: nothing to queue and no dispatcher to wake (most
    // events, on a host whose plugins publish more than they listen to).
    if (!stopping_ && std::none_of(subs_.begin(), subs_.end(), [&](const auto& s) {
          return topicMatches(s->pattern, event.topic);
        })) {
      published_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    if (stopping_ || waiting_ >= max_queued_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    // An idle dispatcher waits with no deadline: the first event of a batch has to tell it
    // that one is gathering. After that only a prompt event or a full batch wakes it.
    wake = delivery == Delivery::kPrompt || queue_.empty() || waiting_ + 1 >= kBatchSize;
    if (delivery == Delivery::kPrompt) ++prompt_;
    queue_.push_back(std::move(event));
    ++waiting_;
    ++accepted_;
  }
  published_.fetch_add(1, std::memory_order_relaxed);
  if (wake) cv_.notify_one();
  return true;
}

void EventBus::flush() {
  if (onDispatcherThread()) return;
  std::unique_lock lock(mu_);
  uint64_t target = accepted_;
  if (delivered_ >= target) return;
  ++flushes_;  // batched events are due at once
  cv_.notify_one();
  idle_cv_.wait(lock, [&] { return delivered_ >= target; });
  --flushes_;
}

bool EventBus::topicMatches(std::string_view pattern, std::string_view topic) {
  if (pattern == "*") return true;
  if (pattern.size() >= 2 && pattern.substr(pattern.size() - 2) == ".*") {
    std::string_view prefix = pattern.substr(0, pattern.size() - 1);  // keeps the '.'
    return topic.size() > prefix.size() && topic.substr(0, prefix.size()) == prefix;
  }
  return pattern == topic;
}

void EventBus::run() {
  std::unique_lock lock(mu_);
  std::deque<Event> taken;
  std::vector<std::shared_ptr<Subscription>> targets;
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and drained
    // Only batched events so far: let more gather for a bounded while.
    if (!dueLocked()) cv_.wait_for(lock, kBatchDelay, [&] { return dueLocked(); });
    taken.swap(queue_);  // everything queued now is delivered in this round, in order
    prompt_ = 0;
    while (!taken.empty()) {
      Event event = std::move(taken.front());
      taken.pop_front();
      --waiting_;
      deliver(event, lock, targets);
      ++delivered_;
      idle_cv_.notify_all();
    }
  }
}

void EventBus::deliver(const Event& event, std::unique_lock<std::mutex>& lock,
                       std::vector<std::shared_ptr<Subscription>>& targets) {
  targets.clear();
  for (const auto& s : subs_) {
    if (topicMatches(s->pattern, event.topic)) targets.push_back(s);
  }
  for (const auto& s : targets) {
    if (!s->active) continue;  // unsubscribed by an earlier subscriber of this event
    calling_ = s->id;
    // Never hold the lock while running subscriber code: it may publish, subscribe or
    // unsubscribe, and a slow subscriber must not block publishers.
    lock.unlock();
    try {
      s->fn(event);
    } catch (const std::exception& e) {
      spdlog::error("event subscriber {} failed on topic '{}': {}", s->id, event.topic, e.what());
    } catch (...) {
      spdlog::error("event subscriber {} failed on topic '{}': unknown exception", s->id,
                    event.topic);
    }
    lock.lock();
    calling_ = 0;
    idle_cv_.notify_all();
  }
  // Release our references outside the lock: this may destroy an unsubscribed callback.
  lock.unlock();
  targets.clear();
  lock.lock();
}

}  // namespace trellis::kernel::events
