//! Policies wrapped around every channel by the dispatcher: the circuit breaker, the rate
//! limiter, and the [`Gate`] that owns them with the channel's hold, lease budget and bulkhead.
//! Channels stay policy-free; retry lives in `dispatch`. All of it runs on tokio's clock (through
//! [`crate::clock`]), so the tests run on paused time.

pub mod breaker;
pub mod gate;
pub mod rate_limit;
pub mod shared_limit;

pub use breaker::{Admission, Breaker, BreakerView, Verdict};
pub use gate::{ClaimAnswer, Gate, Held, Hold, HoldReason, RowLease, SendPermit, Unsent};
pub use rate_limit::{Gcra, Limiter, RateLimiter, Ticket};
pub use shared_limit::SharedLimiter;
