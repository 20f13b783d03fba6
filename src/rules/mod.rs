//! Delivery rules: each decision a pure function of the model, persisted by the store.

pub mod escalation;
