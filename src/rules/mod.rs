//! Delivery rules (issue 15): each rule's decision as a pure function of the model, unit-tested
//! on injected time. The stores and the dispatcher only carry out what these decide.

pub mod dedup;
pub mod digest;
