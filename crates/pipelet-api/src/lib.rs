//! pipelet's public API, with no I/O: the JSON shapes clients send and receive, the
//! model catalog, and the validation that turns a create body into a [`JobSpec`].
//!
//! Everything a client can get wrong is decided here, so the server's handlers stay thin
//! and every rule is unit-tested without a server.

pub mod catalog;
pub mod clock;
pub mod error_codes;
pub mod image_input;
pub mod plural;
pub mod spec;
pub mod wire;
pub mod worker_protocol;

pub use catalog::{Catalog, CatalogError, ModelInfo, ModelSpec, Pipeline};
pub use error_codes::ErrorCode;
pub use image_input::InputImageInfo;
pub use plural::plural;
pub use spec::{InputError, JobSpec, Limits, ValidatedCreate, validate_create};
