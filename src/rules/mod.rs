//! The delivery rules of issue 15, each a pure function of the model and the time it is given.

pub mod consent;
pub mod dedup;
pub mod digest;
pub mod quiet_hours;
pub mod window;
