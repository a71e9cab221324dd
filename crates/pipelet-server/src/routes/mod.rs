//! The router: which path goes to which handler, and the layers around them.

pub mod health;
pub mod queue;
pub mod worker;
