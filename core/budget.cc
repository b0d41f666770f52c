#include "core/budget.h"

#include <algorithm>

namespace blkcopy {

bool Budget::try_take(uint64_t n, uint64_t held, bool woken) {
  const bool small = held + n <= small_;
  if (!small && !woken && listed_.load()) return false;  // behind those waiting
  const uint64_t cap = small ? limit_ : limit_ - reserve_;
  uint64_t used = used_.load(std::memory_order_relaxed);
  do {
    if (n > cap || used > cap - n) return false;
  } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
  note_high(used + n);
  return true;
}

void Budget::force(uint64_t n) { note_high(used_.fetch_add(n, std::memory_order_relaxed) + n); }

void Budget::note_high(uint64_t used) {
  uint64_t high = high_.load(std::memory_order_relaxed);
  while (used > high && !high_.compare_exchange_weak(high, used, std::memory_order_relaxed)) {
  }
}

void Budget::give(uint64_t n) {
  used_.fetch_sub(n, std::memory_order_relaxed);
  gives_.fetch_add(1);  // seq_cst: ordered before the load below, as wait() orders its own
  if (waiting_.load()) wake_all();
}

void Budget::wake_all() {
  std::vector<BudgetQueue*> wake;
  {
    std::lock_guard lock(mu_);
    wake.swap(queues_);
    waiting_ = false;
  }
  for (BudgetQueue* q : wake) {
    q->registered_ = false;
    q->loop_.post_remote([q] { q->retry(); });
  }
}

void Budget::wait(BudgetQueue* q, uint64_t seen) {
  if (!q->registered_.exchange(true)) {
    std::lock_guard lock(mu_);
    queues_.push_back(q);
    waiting_ = true;
  }
  // A give between the failed take and the registration saw no waiter: wake now instead.
  if (gives_.load() != seen) wake_all();
}

void BudgetQueue::add(Account* a, uint64_t seen) {
  if (!a->ticket_) a->ticket_ = ++budget_.tickets_;  // an account that got nothing keeps its place
  waiting_.push_back(a);
  ++budget_.listed_;
  budget_.wait(this, seen);
}

void BudgetQueue::remove(Account* a) {
  if (std::erase(waiting_, a)) --budget_.listed_;
}

void BudgetQueue::retry() {
  auto accounts = std::move(waiting_);
  waiting_.clear();
  std::sort(accounts.begin(), accounts.end(),
            [](const Account* a, const Account* b) { return a->ticket_ < b->ticket_; });
  for (Account* a : accounts) a->listed_ = false;
  // Counted as waiting until its turn: a take that is not a turn stays behind all of them.
  for (Account* a : accounts) {
    --budget_.listed_;
    a->pump(true);
  }
}

Account::~Account() {
  if (listed_) q_.remove(this);
  if (held_) q_.budget_.give(held_);
}

bool Account::fits(uint64_t n, bool woken) {
  if (held_ + n > share_) return false;  // waits for its own requests to give back
  const uint64_t seen = q_.budget_.generation();
  if (!q_.budget_.try_take(n, held_, woken)) {
    if (!listed_) {
      listed_ = true;
      q_.add(this, seen);
    }
    return false;
  }
  held_ += n;
  ticket_ = 0;  // served: a later wait queues behind those waiting now
  return true;
}

bool Account::take(BudgetWaiter& w) {
  if (!head_ && fits(w.bytes, false)) return true;
  w.next = nullptr;
  w.queued = true;
  (tail_ ? tail_->next : head_) = &w;
  tail_ = &w;
  return false;
}

void Account::force(uint64_t n) {
  held_ += n;
  q_.budget_.force(n);  // counted even above the limit: others wait until it is given back
}

void Account::give(uint64_t n) {
  held_ -= n;
  q_.budget_.give(n);
  pump();
}

bool Account::cancel(BudgetWaiter& w) {
  if (!w.queued) return false;
  BudgetWaiter** p = &head_;
  BudgetWaiter* prev = nullptr;
  while (*p && *p != &w) {
    prev = *p;
    p = &(*p)->next;
  }
  if (!*p) return false;
  *p = w.next;
  if (tail_ == &w) tail_ = prev;
  w.queued = false;
  pump();  // the one behind it may fit now
  return true;
}

void Account::pump(bool woken) {
  if (pumping_) return;
  pumping_ = true;
  while (head_ && fits(head_->bytes, woken)) {
    BudgetWaiter* w = head_;
    head_ = w->next;
    if (!head_) tail_ = nullptr;
    w->queued = false;
    w->granted();  // may take, give or cancel: the loop looks at the queue again
  }
  pumping_ = false;
}

}  // namespace blkcopy
