pub mod dedup;
pub mod digest;
