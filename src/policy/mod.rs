//! Policies wrapped around every channel by the dispatcher: the circuit breaker, the rate
//! limiter, and the [`Gate`] that owns them with the channel's hold, lease budget and bulkhead.
//! Channels stay policy-free; retry lives in `dispatch`. All of it runs on tokio's clock (through
//! [`crate::clock`]), so the tests run on paused time.

pub(crate) mod breaker;
pub(crate) mod gate;
pub(crate) mod rate_limit;
pub(crate) mod shared_limit;

pub(crate) use crate::model::HoldReason;
pub(crate) use breaker::{Admission, Breaker, BreakerView, Verdict};
pub(crate) use gate::{ClaimAnswer, Gate, Held, RowLease, SendPermit, Unsent};
pub(crate) use rate_limit::{Limiter, RateLimiter, Ticket};
pub(crate) use shared_limit::SharedLimiter;
