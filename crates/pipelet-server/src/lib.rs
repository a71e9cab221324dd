//! pipelet's HTTP server: the public queue API over the store, auth by bearer keys,
//! and the in-process workers of `pipelet serve`.

pub mod app;
pub mod auth;
pub mod config;
pub mod disk;
pub mod error;
pub mod eta;
mod extract;
pub mod metrics;
pub mod openapi;
pub mod queue_service;
pub mod quotas;
mod result_body;
pub mod result_links;
pub mod retention;
mod router;
mod routes;
pub mod state;
mod status_view;
pub mod tls;
mod urls;
pub mod webhooks;

pub use app::Application;
pub use config::{Config, ServeArgs};
