#include "trellis/kernel/events/event_bus.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace trellis::kernel::events {
namespace {

using namespace std::chrono_literals;

Event makeEvent(std::string topic, std::string payload = "{}") {
  return Event{"acme", "trellis/hello", std::move(topic), std::move(payload)};
}

// Collects what a subscriber saw; safe to read after flush().
struct Recorder {
  std::mutex mu;
  std::vector<Event> events;
  Subscriber fn() {
    return [this](const Event& e) {
      std::lock_guard lock(mu);
      events.push_back(e);
    };
  }
  std::vector<std::string> topics() {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.topic);
    return out;
  }
};

TEST(EventBusTest, TopicPatterns) {
  EXPECT_TRUE(EventBus::topicMatches("request.completed", "request.completed"));
  EXPECT_FALSE(EventBus::topicMatches("request.completed", "request.completed.x"));
  EXPECT_TRUE(EventBus::topicMatches("request.*", "request.completed"));
  EXPECT_TRUE(EventBus::topicMatches("request.*", "request.a.b"));
  EXPECT_FALSE(EventBus::topicMatches("request.*", "request"));
  EXPECT_FALSE(EventBus::topicMatches("request.*", "request."));
  EXPECT_FALSE(EventBus::topicMatches("request.*", "requests.completed"));
  EXPECT_FALSE(EventBus::topicMatches("request.*", "plugin.request.x"));
  EXPECT_TRUE(EventBus::topicMatches("*", "anything.at.all"));
  EXPECT_FALSE(EventBus::topicMatches("request", "request.completed"));
}

TEST(EventBusTest, DeliversMatchingEventsInOrderWithAllFields) {
  EventBus bus(100);
  Recorder exact, prefix, other;
  bus.subscribe("request.completed", exact.fn());
  bus.subscribe("request.*", prefix.fn());
  bus.subscribe("audit.*", other.fn());
  EXPECT_TRUE(bus.publish(makeEvent("request.completed", R"({"status":200})")));
  EXPECT_TRUE(bus.publish(makeEvent("request.started")));
  bus.flush();
  EXPECT_EQ(exact.topics(), (std::vector<std::string>{"request.completed"}));
  EXPECT_EQ(prefix.topics(), (std::vector<std::string>{"request.completed", "request.started"}));
  EXPECT_TRUE(other.topics().empty());
  std::lock_guard lock(exact.mu);
  EXPECT_EQ(exact.events[0].tenant, "acme");
  EXPECT_EQ(exact.events[0].publisher, "trellis/hello");
  EXPECT_EQ(exact.events[0].payload, R"({"status":200})");
  EXPECT_EQ(bus.published(), 2u);
  EXPECT_EQ(bus.dropped(), 0u);
}

TEST(EventBusTest, FullQueueDropsAndCounts) {
  EventBus bus(2);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::promise<void> entered;
  std::atomic<int> seen{0};
  bool first = true;
  bus.subscribe("t", [&](const Event&) {
    if (first) {
      first = false;
      entered.set_value();
      gate.wait();  // hold the dispatcher so the queue fills up
    }
    ++seen;
  });
  ASSERT_TRUE(bus.publish(makeEvent("t")));
  entered.get_future().wait();  // the first event left the queue and is being delivered
  EXPECT_TRUE(bus.publish(makeEvent("t")));
  EXPECT_TRUE(bus.publish(makeEvent("t")));
  EXPECT_FALSE(bus.publish(makeEvent("t")));
  EXPECT_FALSE(bus.publish(makeEvent("t")));
  EXPECT_EQ(bus.dropped(), 2u);
  EXPECT_EQ(bus.published(), 3u);
  // A topic nobody subscribes to takes no room in the queue: it cannot crowd out events
  // somebody waits for.
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(bus.publish(makeEvent("unheard")));
  EXPECT_EQ(bus.dropped(), 2u);
  EXPECT_EQ(bus.published(), 13u);
  release.set_value();
  bus.flush();
  EXPECT_EQ(seen.load(), 3);
}

TEST(EventBusTest, PublishDoesNotWaitForSlowSubscribers) {
  EventBus bus(10);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  bus.subscribe("t", [gate](const Event&) { gate.wait(); });
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(bus.publish(makeEvent("t")));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  release.set_value();
  bus.flush();
}

TEST(EventBusTest, ThrowingSubscriberDoesNotStopDelivery) {
  EventBus bus(10);
  Recorder after;
  bus.subscribe("t", [](const Event&) { throw std::runtime_error("boom"); });
  bus.subscribe("t", [](const Event&) { throw 42; });
  bus.subscribe("t", after.fn());
  bus.publish(makeEvent("t"));
  bus.publish(makeEvent("t"));
  bus.flush();
  EXPECT_EQ(after.topics().size(), 2u);
}

TEST(EventBusTest, SubscribersMayPublishSubscribeAndUnsubscribeFromACallback) {
  EventBus bus(100);
  Recorder chained, late;
  uint64_t self = 0;
  std::atomic<int> self_calls{0};
  bus.subscribe("chained", chained.fn());
  self = bus.subscribe("start", [&](const Event& e) {
    ++self_calls;
    bus.publish(makeEvent("chained"));
    bus.subscribe("later", late.fn());
    bus.unsubscribe(self);
    bus.flush();  // from the dispatcher: must return rather than deadlock
  });
  bus.publish(makeEvent("start"));
  bus.flush();
  bus.publish(makeEvent("start"));  // self is gone
  bus.publish(makeEvent("later"));
  bus.flush();
  EXPECT_EQ(self_calls.load(), 1);
  EXPECT_EQ(chained.topics().size(), 1u);
  EXPECT_EQ(late.topics().size(), 1u);
}

TEST(EventBusTest, UnsubscribedInEarlierCallbackIsNotCalledForTheSameEvent) {
  EventBus bus(10);
  std::atomic<int> second_calls{0};
  uint64_t second = 0;
  bus.subscribe("t", [&](const Event&) { bus.unsubscribe(second); });
  second = bus.subscribe("t", [&](const Event&) { ++second_calls; });
  bus.publish(makeEvent("t"));
  bus.flush();
  EXPECT_EQ(second_calls.load(), 0);
}

TEST(EventBusTest, UnsubscribeWaitsForARunningCallback) {
  EventBus bus(10);
  std::promise<void> entered;
  std::atomic<bool> finished{false};
  uint64_t id = bus.subscribe("t", [&](const Event&) {
    entered.set_value();
    std::this_thread::sleep_for(200ms);
    finished = true;
  });
  bus.publish(makeEvent("t"));
  entered.get_future().wait();
  bus.unsubscribe(id);
  EXPECT_TRUE(finished.load());
  bus.unsubscribe(id);  // unknown ids are ignored
  bus.unsubscribe(12345);
}

TEST(EventBusTest, FlushWaitsForEverythingPublishedBefore) {
  EventBus bus(1000);
  std::atomic<int> seen{0};
  bus.subscribe("t", [&](const Event&) {
    std::this_thread::sleep_for(1ms);
    ++seen;
  });
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(bus.publish(makeEvent("t")));
  bus.flush();
  EXPECT_EQ(seen.load(), 50);
  bus.flush();  // nothing pending: returns at once
}

TEST(EventBusTest, DestructorDeliversWhatIsQueued) {
  std::atomic<int> seen{0};
  {
    EventBus bus(100);
    bus.subscribe("t", [&](const Event&) {
      std::this_thread::sleep_for(1ms);
      ++seen;
    });
    for (int i = 0; i < 20; ++i) bus.publish(makeEvent("t"));
  }
  EXPECT_EQ(seen.load(), 20);
}

TEST(EventBusTest, ConcurrentPublishersAllDeliveredWhenQueueIsLargeEnough) {
  EventBus bus(100000);
  std::atomic<int> seen{0};
  bus.subscribe("t.*", [&](const Event&) { ++seen; });
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) bus.publish(makeEvent("t.x"));
    });
  }
  for (auto& t : threads) t.join();
  bus.flush();
  EXPECT_EQ(seen.load(), 4000);
  EXPECT_EQ(bus.published(), 4000u);
  EXPECT_EQ(bus.dropped(), 0u);
}

TEST(EventBusTest, BatchedEventsArriveWithoutAnotherPublishOrFlush) {
  EventBus bus(100);
  std::promise<std::string> got;
  bus.subscribe("audit.*", [&](const Event& e) { got.set_value(e.payload); });
  ASSERT_TRUE(bus.publish(makeEvent("audit.plugin", R"({"n":1})"), Delivery::kBatched));
  // Nothing else happens on the bus: the batch's deadline alone delivers it.
  auto future = got.get_future();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(future.get(), R"({"n":1})");
}

TEST(EventBusTest, BatchedAndPromptEventsKeepThePublishingOrder) {
  EventBus bus(1000);
  Recorder rec;
  bus.subscribe("*", rec.fn());
  std::vector<std::string> expected;
  for (int i = 0; i < 2 * static_cast<int>(EventBus::kBatchSize) + 5; ++i) {
    const std::string topic = "t" + std::to_string(i);
    const bool prompt = i % 17 == 0;
    ASSERT_TRUE(bus.publish(makeEvent(topic), prompt ? Delivery::kPrompt : Delivery::kBatched));
    expected.push_back(topic);
  }
  bus.flush();
  EXPECT_EQ(rec.topics(), expected);
  EXPECT_EQ(bus.published(), expected.size());
}

TEST(EventBusTest, FlushAndTheDestructorDeliverBatchedEvents) {
  std::atomic<int> seen{0};
  {
    EventBus bus(100);
    bus.subscribe("t", [&](const Event&) { ++seen; });
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(bus.publish(makeEvent("t"), Delivery::kBatched));
    bus.flush();
    EXPECT_EQ(seen.load(), 5);
    for (int i = 0; i < 7; ++i) ASSERT_TRUE(bus.publish(makeEvent("t"), Delivery::kBatched));
  }
  EXPECT_EQ(seen.load(), 12);
}

TEST(EventBusTest, BatchedEventsCountAgainstTheQueueBound) {
  EventBus bus(3);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::promise<void> entered;
  std::atomic<int> seen{0};
  bool first = true;
  bus.subscribe("t", [&](const Event&) {
    if (first) {
      first = false;
      entered.set_value();
      gate.wait();  // hold the dispatcher so the queue fills up
    }
    ++seen;
  });
  ASSERT_TRUE(bus.publish(makeEvent("t")));
  entered.get_future().wait();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(bus.publish(makeEvent("t"), Delivery::kBatched));
  EXPECT_FALSE(bus.publish(makeEvent("t"), Delivery::kBatched));
  EXPECT_EQ(bus.dropped(), 1u);
  release.set_value();
  bus.flush();
  EXPECT_EQ(seen.load(), 4);
}

}  // namespace
}  // namespace trellis::kernel::events
