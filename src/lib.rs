//! notifyd: a notification daemon that never loses one.
//!
//! The path of a notification: [`api`] or [`cli`] validate a [`submission`] into a
//! [`outbox::NewNotification`], the [`outbox`] makes it durable, the [`dispatch`] loop claims it
//! and hands it to its channel (from `notifyd-channels`), and writes the outcome back.

pub mod outbox;
