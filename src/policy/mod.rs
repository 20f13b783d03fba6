//! Policies wrapped around every channel by the dispatcher: the circuit breaker and the rate
//! limiter. Channels stay policy-free; timeouts, retry and the bulkhead live in `dispatch` and
//! `registry`. Both use tokio's clock, so their tests run on paused time.

pub mod breaker;
pub mod rate_limit;

pub use breaker::{Admission, Breaker, BreakerView, Verdict};
pub use rate_limit::{Gcra, RateLimiter, Ticket};
