// Memory budgets: what every peer together may cost (a target's data buffers, the buffers of the
// copies it emulates), shared by the connections of several event loops, with a share per
// connection so that one peer cannot take it all.
//
//   Budget       one per kind of memory and target; thread-safe. A holder below `small` bytes
//                may use all of it; the rest of the holders stop `reserve` bytes short, so that
//                a connection that holds little (a host reading 4 KiB blocks) gets room while
//                large holders (a host that stopped reading its answers) wait.
//   BudgetQueue  one per budget and event loop, for as long as the budget: the accounts of that
//                loop that wait for room are woken there (post_remote) when room is given back.
//   Account      one per connection (loop-local): what it holds, its share, and its waiters in
//                FIFO order. A request that does not fit waits; it never fails.
//
// Fairness: while an account waits for room, no other may take room above `small` ahead of it
// (not even one whose own request just gave room back); woken accounts take in the order they
// began to wait, so a host asking for 1 MiB is not starved by hosts that re-fill every byte they
// give back. Small holders keep using the reserve meanwhile.
#pragma once

#include <blkcopy/event_loop.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace blkcopy {

class BudgetQueue;

class Budget {
 public:
  Budget(uint64_t limit, uint64_t reserve, uint64_t small)
      : limit_(limit), reserve_(std::min(reserve, limit)), small_(small) {}
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;

  // Takes n bytes for a holder that has `held` now, if they fit. A holder that is not `woken`
  // for its turn does not take room above `small` while others wait for room.
  bool try_take(uint64_t n, uint64_t held, bool woken = false);
  // Takes n bytes whatever the limit (memory already spent).
  void force(uint64_t n);
  // Gives n bytes back and wakes the queues waiting for room.
  void give(uint64_t n);
  // Counts gives: a waiter notes it before trying, so that a give between its try and its
  // registration is not lost.
  uint64_t generation() const { return gives_.load(); }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }
  uint64_t high_water() const { return high_.load(std::memory_order_relaxed); }

 private:
  friend class BudgetQueue;
  // q->retry() runs on q's loop after the next give(), or at once if one came after `seen`.
  void wait(BudgetQueue* q, uint64_t seen);
  void wake_all();
  void note_high(uint64_t used);

  const uint64_t limit_, reserve_, small_;
  std::atomic<uint64_t> used_{0}, high_{0}, gives_{0}, tickets_{0};
  std::atomic<uint64_t> listed_{0};  // accounts waiting for room, on every loop
  std::atomic<bool> waiting_{false};
  std::mutex mu_;
  std::vector<BudgetQueue*> queues_;  // waiting, under mu_
};

// Something waiting for room: granted() runs on the account's loop once its bytes are taken.
struct BudgetWaiter {
  uint64_t bytes = 0;
  BudgetWaiter* next = nullptr;
  bool queued = false;
  virtual void granted() = 0;

 protected:
  ~BudgetWaiter() = default;
};

class Account;

class BudgetQueue {
 public:
  BudgetQueue(Budget& budget, EventLoop& loop) : budget_(budget), loop_(loop) {}
  // REQUIRES: no account of it left, and the budget outlives it with no wake-up in flight
  // (the target frees its queues only after its loops have stopped).
  Budget& budget() const { return budget_; }

 private:
  friend class Account;
  friend class Budget;
  void add(Account* a, uint64_t seen);
  void remove(Account* a);
  void retry();  // on loop_: every waiting account tries again, oldest wait first

  Budget& budget_;
  EventLoop& loop_;
  std::vector<Account*> waiting_;  // loop thread only
  std::atomic<bool> registered_{false};
};

class Account {
 public:
  Account(BudgetQueue& q, uint64_t share) : q_(q), share_(share) {}
  ~Account();  // gives back what it holds; its waiters are dropped (cancel them first)
  Account(const Account&) = delete;
  Account& operator=(const Account&) = delete;

  // Takes w.bytes now (true), or queues w and calls w.granted() later, on the loop, once they
  // are taken for it. Bytes above the share are never granted: REQUIRES w.bytes <= share.
  bool take(BudgetWaiter& w);
  // Takes n bytes whatever the limits (memory already spent, such as data that arrived inside
  // a command capsule): counted, so that others wait until it is given back.
  void force(uint64_t n);
  void give(uint64_t n);
  // Takes a queued waiter out of the queue (its request went away); false if it was not queued.
  bool cancel(BudgetWaiter& w);
  uint64_t held() const { return held_; }
  uint64_t share() const { return share_; }
  EventLoop& loop() const { return q_.loop_; }  // the loop it lives on
  bool waiting() const { return head_ != nullptr; }

 private:
  friend class BudgetQueue;
  void pump(bool woken = false);  // grants waiters at the head while they fit
  bool fits(uint64_t n, bool woken);

  BudgetQueue& q_;
  const uint64_t share_;
  uint64_t held_ = 0;
  BudgetWaiter* head_ = nullptr;
  BudgetWaiter* tail_ = nullptr;
  bool listed_ = false;   // in q_.waiting_: blocked on the budget, not on the share
  uint64_t ticket_ = 0;   // when it began to wait for room (0: it is not waiting)
  bool pumping_ = false;
};

}  // namespace blkcopy
