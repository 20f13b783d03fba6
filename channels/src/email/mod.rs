//! E-mail channels.

pub mod smtp;
