//! Delivery rules (issue 15): each rule's decision as a pure function of the model and the time
//! it is given, unit-tested on injected time. The stores and the dispatcher only carry out what
//! these decide.

pub mod consent;
pub mod dedup;
pub mod digest;
pub mod quiet_hours;
pub mod window;
