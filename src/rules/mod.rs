//! Delivery rules (issue 15): each rule's decision as a pure function of the model and the time
//! it is given, unit-tested on injected time. The stores and the dispatcher only carry out what
//! these decide.

pub(crate) mod consent;
pub(crate) mod dedup;
pub(crate) mod digest;
pub(crate) mod escalation;
pub(crate) mod quiet_hours;
